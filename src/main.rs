use clap::Parser;

fn main() {
    let cli = evolved::cli::Cli::parse();
    // Terms are walked recursively; a large stack keeps long inputs from overflowing it.
    let worker = std::thread::Builder::new()
        .stack_size(512 << 20)
        .spawn(move || evolved::cli::run(cli, &mut std::io::stdout(), &mut std::io::stderr()))
        .expect("start the worker thread");
    let code = worker.join().unwrap_or(3);
    std::process::exit(code);
}
