use clap::Parser;

fn main() {
    let cli = evolved::cli::Cli::parse();
    let code = evolved::cli::run(cli, &mut std::io::stdout(), &mut std::io::stderr());
    std::process::exit(code);
}
