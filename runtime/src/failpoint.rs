//! Fault injection, for tests of what happens when something breaks deep inside a run:
//! `VIDTUNE_FAILPOINTS=name[=action][,…]` makes [`hit`]`(name)` fail where it is called — `panic` (the
//! default), as a bug would, or `abort`, the process dying at once as it does when a native library
//! crashes or the machine kills it. Without the variable nothing is injected. The places:
//!
//! - `tune-step`: each step of `tune`, before its forward pass.

/// Fails as `VIDTUNE_FAILPOINTS` says for `name`, if it names it.
pub fn hit(name: &str) {
    match action(std::env::var("VIDTUNE_FAILPOINTS").ok().as_deref(), name) {
        None => {}
        Some("abort") => {
            eprintln!("failpoint {name}: aborting, as VIDTUNE_FAILPOINTS asks");
            std::process::abort();
        }
        Some(_) => panic!("failpoint {name}: a panic injected by VIDTUNE_FAILPOINTS"),
    }
}

/// What `list` asks of the failpoint `name`: `Some("panic")`, `Some("abort")`, or `None`.
fn action<'a>(list: Option<&'a str>, name: &str) -> Option<&'a str> {
    list?.split(',').find_map(|item| {
        let (n, a) = item.split_once('=').unwrap_or((item, "panic"));
        (n.trim() == name).then_some(a.trim())
    })
}

#[cfg(test)]
mod tests {
    use super::action;

    #[test]
    fn a_failpoint_acts_only_when_named() {
        assert_eq!(action(Some("other, tune-step"), "tune-step"), Some("panic"));
        assert_eq!(action(Some("tune-step=abort"), "tune-step"), Some("abort"));
        assert_eq!(action(Some("other, tune-step"), "sample-step"), None);
        assert_eq!(action(Some("tune-steps"), "tune-step"), None);
        assert_eq!(action(None, "tune-step"), None);
        let caught = std::panic::catch_unwind(|| super::hit("a-failpoint-no-test-names"));
        assert!(caught.is_ok());
    }
}
