//! Ctrl-C (SIGINT) and SIGTERM. The handler only sets flags and writes a fixed line (both
//! async-signal-safe); the main thread notices them at its next safe point (the loops' steps, Rhai's
//! operation hook, the watch's wait), cleans its temporaries on the way out, and exits 130 or 143 itself.
//! Exiting from the handler while libtorch works crashed the process (exit's destructors ran under running
//! kernels).
//!
//! - `run`: the first Ctrl-C cancels the running primitive, a second asks to quit; both end the script
//!   with status 130 at the next step. SIGTERM does the same with 143.
//! - `watch`: a Ctrl-C cancels the current run and the watch goes on; a second within
//!   [`QUIT_WINDOW`] quits (130). SIGTERM quits (143).
//! - the REPL: a Ctrl-C cancels the evaluation, the session stays; SIGTERM leaves (143).
//!
//! A third Ctrl-C while quitting ends the process at once (`_exit`, no destructors, so no crash); a save
//! in progress then leaves its temporary, which the next save removes.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::time::Duration;

/// How close two Ctrl-C must be to quit watch mode.
pub const QUIT_WINDOW: Duration = Duration::from_secs(2);

/// Where the signals arrive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Mode {
    Run = 0,
    Watch = 1,
    Repl = 2,
}

static MODE: AtomicU8 = AtomicU8::new(Mode::Run as u8);
static PRESSES: AtomicU32 = AtomicU32::new(0);
static LAST_PRESS_MS: AtomicU64 = AtomicU64::new(0);
static QUIT: AtomicBool = AtomicBool::new(false);
static TERM: AtomicBool = AtomicBool::new(false);

fn say(text: &str) {
    // SAFETY: write(2) on stderr with a valid buffer is async-signal-safe.
    unsafe { libc::write(2, text.as_ptr().cast(), text.len()) };
}

/// Milliseconds of CLOCK_MONOTONIC (clock_gettime is async-signal-safe).
fn now_ms() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime fills the timespec it is given.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1000 + ts.tv_nsec as u64 / 1_000_000
}

extern "C" fn on_signal(sig: libc::c_int) {
    vidtune_runtime::progress::request_cancel();
    if sig == libc::SIGTERM && AT_PROMPT.load(Ordering::SeqCst) {
        // The REPL waits for a line: nothing runs and no save is in progress, so leave now, with the
        // terminal as it was before the line editor took it.
        if HAVE_TERMINAL.load(Ordering::SeqCst) {
            // SAFETY: TERMINAL was fully written before HAVE_TERMINAL was set; tcsetattr is async-signal-safe.
            unsafe { libc::tcsetattr(0, libc::TCSANOW, std::ptr::addr_of!(TERMINAL).cast()) };
        }
        say("\nterminated\n");
        // SAFETY: _exit skips destructors; nothing is in progress.
        unsafe { libc::_exit(143) };
    }
    if sig == libc::SIGTERM {
        TERM.store(true, Ordering::SeqCst);
        QUIT.store(true, Ordering::SeqCst);
        say("\nterminated: stopping at the next step\n");
        return;
    }
    let presses = PRESSES.fetch_add(1, Ordering::SeqCst) + 1;
    let now = now_ms();
    let last = LAST_PRESS_MS.swap(now, Ordering::SeqCst);
    if QUIT.load(Ordering::SeqCst) && presses >= 3 {
        // SAFETY: _exit ends the process without running destructors, which is what makes it safe here.
        unsafe { libc::_exit(130) };
    }
    match MODE.load(Ordering::SeqCst) {
        m if m == Mode::Watch as u8 => {
            if presses > 1 && now.saturating_sub(last) < QUIT_WINDOW.as_millis() as u64 {
                QUIT.store(true, Ordering::SeqCst);
                say("\n── quit\n");
            } else {
                say("\n── Ctrl-C: the current run (if any) is cancelled; Ctrl-C again within 2 s quits\n");
            }
        }
        m if m == Mode::Repl as u8 => {}
        _ => {
            if presses == 1 {
                say("\ncancelling at the next step (Ctrl-C again quits)\n");
            } else {
                QUIT.store(true, Ordering::SeqCst);
                say("\nquitting at the next step (a third Ctrl-C ends the process at once)\n");
            }
        }
    }
}

/// Installs the handler for SIGINT and SIGTERM, and ignores SIGXFSZ (a file-size limit then fails the
/// write with an error, and the save cleans its temporary, instead of killing the process).
pub fn install(mode: Mode) {
    MODE.store(mode as u8, Ordering::SeqCst);
    // SAFETY: a zeroed sigaction with a plain handler and an empty mask is valid; the handler only touches
    // atomics, clock_gettime, write and _exit.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as usize;
        action.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut action.sa_mask);
        libc::sigaction(libc::SIGINT, &action, std::ptr::null_mut());
        libc::sigaction(libc::SIGTERM, &action, std::ptr::null_mut());
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
    }
}

static AT_PROMPT: AtomicBool = AtomicBool::new(false);
static HAVE_TERMINAL: AtomicBool = AtomicBool::new(false);
static mut TERMINAL: std::mem::MaybeUninit<libc::termios> = std::mem::MaybeUninit::uninit();

/// Runs `read` (the REPL's line editor) marked as waiting at the prompt, where SIGTERM leaves at once.
pub fn at_prompt<T>(read: impl FnOnce() -> T) -> T {
    if !HAVE_TERMINAL.load(Ordering::SeqCst) {
        // SAFETY: only this (main) thread writes TERMINAL, once, before HAVE_TERMINAL says it is valid.
        unsafe {
            if libc::tcgetattr(0, std::ptr::addr_of_mut!(TERMINAL).cast()) == 0 {
                HAVE_TERMINAL.store(true, Ordering::SeqCst);
            }
        }
    }
    AT_PROMPT.store(true, Ordering::SeqCst);
    let out = read();
    AT_PROMPT.store(false, Ordering::SeqCst);
    reset_presses();
    out
}

/// Whether the process was asked to quit (a second Ctrl-C, or SIGTERM).
pub fn quit_requested() -> bool {
    QUIT.load(Ordering::SeqCst)
}

/// The exit status for an interrupted process: 143 after SIGTERM, else 130.
pub fn exit_status() -> u8 {
    if TERM.load(Ordering::SeqCst) {
        143
    } else {
        130
    }
}

/// Forgets earlier presses (a new REPL evaluation or watch run starts counting afresh).
pub fn reset_presses() {
    PRESSES.store(0, Ordering::SeqCst);
}
