//! Rule-file text: parse, shape-check, merge with the built-in rules (duplicate names),
//! compile each rule to an egg rewrite, and render errors as the command line does.
//! Nothing may panic or hang.
#![no_main]
use evolved::syntax::{Span, SyntaxError};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(rules) = evolved::rules::load_rules("fuzz.rules", text) {
        for r in &rules {
            let _ = r.rewrite();
        }
    }
    if let Err(e) = evolved::rules::rule_set(&[("fuzz.rules".to_string(), text.to_string())], false) {
        // as cli::load_sources shows it
        let _ = evolved::cli::diagnostic(&e.file, text, &SyntaxError { span: Span { start: e.offset, end: e.offset + 1 }, message: e.message });
    }
});
