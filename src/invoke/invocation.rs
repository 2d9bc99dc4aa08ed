//! How one invocation ends, decided in one place: the request's task feeds every event it
//! sees (the deadline, a denied syscall, a bad head, the output limit, the client leaving, the
//! sandbox's exit, its cgroup counters) to an `Invocation`, and `verdict` turns them into the
//! outcome. The rule: the first event that dooms the sandbox decides, and the exit status
//! decides only if none did; an out-of-memory kill explains any failure except a denied
//! syscall (which is an attack, whatever else happened).

use super::Outcome;
use crate::sandbox::{ExitStatus, Usage};

/// What one invocation has seen so far.
#[derive(Debug, Default)]
pub(super) struct Invocation {
    /// The first event that doomed the sandbox, if one did.
    decided: Option<Outcome>,
    exit: Option<ExitStatus>,
    head_sent: bool,
    /// The body reached the Content-Length its head gave: the response is whole, and the
    /// sandbox was killed because it is over, not because it failed.
    whole: bool,
    oom_kills: bool,
}

/// The sandbox must be killed now.
#[must_use = "the caller kills the sandbox"]
pub(super) struct Kill;

impl Invocation {
    fn doom(&mut self, outcome: Outcome) -> Kill {
        // After a whole response, only the teardown is left: nothing it meets is a failure.
        if !self.whole {
            self.decided.get_or_insert(outcome);
        }
        Kill
    }

    /// The sandbox could not be set up (the reason the caller may read).
    pub fn on_setup_failed(&mut self, reason: String) -> Kill {
        self.doom(Outcome::SetupFailed(reason))
    }

    /// The deadline passed (set-up included), or the sandbox's pipes outlived it.
    pub fn on_deadline(&mut self) -> Kill {
        self.doom(Outcome::Timeout)
    }

    /// It made a deny-listed call.
    pub fn on_denied(&mut self, syscall: String) -> Kill {
        self.doom(Outcome::SyscallDenied(syscall))
    }

    /// Its seccomp listener broke while it ran.
    pub fn on_unsupervised(&mut self) -> Kill {
        self.doom(Outcome::SetupFailed("the sandbox lost its seccomp supervisor".into()))
    }

    /// Its stdout is not a CGI response: no head, or a body short of its Content-Length.
    pub fn on_bad_output(&mut self, why: String) -> Kill {
        self.doom(Outcome::BadResponse(why))
    }

    /// The response head went out to the client.
    pub fn on_head_sent(&mut self) {
        self.head_sent = true;
    }

    /// It wrote past limits.output.
    pub fn on_output_over(&mut self) -> Kill {
        self.doom(Outcome::OutputTooLarge)
    }

    /// The client went away.
    pub fn on_client_gone(&mut self) -> Kill {
        self.doom(Outcome::ClientGone)
    }

    /// Its init exited (and was reaped).
    pub fn on_exit(&mut self, status: ExitStatus) {
        self.exit.get_or_insert(status);
    }

    /// Its cgroup's counters, after teardown.
    pub fn on_usage(&mut self, usage: &Usage) {
        self.oom_kills |= usage.oom_kills > 0;
    }

    /// Its whole response went out (its Content-Length's worth). Nothing after changes how
    /// it ended: the caller kills the sandbox, which is no failure.
    pub fn on_whole(&mut self) {
        self.whole = true;
    }

    /// Whether an event has doomed it, or its response is whole (the rest is then only the
    /// teardown).
    pub fn doomed(&self) -> bool {
        self.decided.is_some() || self.whole
    }

    /// Whether the head went out.
    pub fn head_sent(&self) -> bool {
        self.head_sent
    }

    /// How it ended, from everything seen so far.
    pub fn verdict(&self) -> Outcome {
        match (&self.decided, self.oom_kills, self.head_sent, self.exit) {
            // A denied syscall is an attack: reported as such whatever else happened.
            (Some(denied @ Outcome::SyscallDenied(_)), ..) => denied.clone(),
            // The OOM killer ended something, and what followed looked like another failure.
            (Some(_), true, ..) => Outcome::OutOfMemory,
            (Some(first), false, ..) => first.clone(),
            (None, ..) if self.whole => Outcome::Ok,
            (None, _, true, Some(ExitStatus::Exited(0))) => Outcome::Ok,
            (None, true, ..) => Outcome::OutOfMemory,
            (None, false, false, Some(ExitStatus::Exited(0))) => {
                Outcome::BadResponse("the function exited without writing a response".into())
            }
            (None, false, _, Some(ExitStatus::Exited(code))) => Outcome::Crashed(format!("exited with status {code}")),
            (None, false, _, Some(ExitStatus::Signaled(sig))) => {
                Outcome::Crashed(format!("was killed by signal {}", signal_name(sig)))
            }
            (None, false, _, None) => Outcome::Crashed("vanished".into()),
        }
    }
}

fn signal_name(sig: i32) -> String {
    nix::sys::signal::Signal::try_from(sig).map_or_else(|_| sig.to_string(), |s| s.as_str().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage(oom_kills: u64) -> Usage {
        Usage { oom_kills, ..Usage::default() }
    }

    #[test]
    fn a_clean_exit_after_the_head_is_ok_and_without_it_a_bad_response() {
        let mut ok = Invocation::default();
        ok.on_head_sent();
        ok.on_exit(ExitStatus::Exited(0));
        assert_eq!(ok.verdict(), Outcome::Ok);
        let mut silent = Invocation::default();
        silent.on_exit(ExitStatus::Exited(0));
        assert!(matches!(silent.verdict(), Outcome::BadResponse(_)));
    }

    #[test]
    fn the_exit_status_decides_only_when_nothing_doomed_it() {
        let mut crash = Invocation::default();
        crash.on_head_sent();
        crash.on_exit(ExitStatus::Exited(3));
        assert_eq!(crash.verdict(), Outcome::Crashed("exited with status 3".into()));
        let mut segv = Invocation::default();
        segv.on_exit(ExitStatus::Signaled(11));
        assert_eq!(segv.verdict(), Outcome::Crashed("was killed by signal SIGSEGV".into()));
        // Killed at the deadline: the SIGKILL it died of is ours, not a crash.
        let mut late = Invocation::default();
        let Kill = late.on_deadline();
        late.on_exit(ExitStatus::Signaled(9));
        assert_eq!(late.verdict(), Outcome::Timeout);
        assert_eq!(Invocation::default().verdict(), Outcome::Crashed("vanished".into()));
    }

    #[test]
    fn the_first_event_that_dooms_it_wins() {
        let mut a = Invocation::default();
        let Kill = a.on_denied("ptrace".into());
        let Kill = a.on_deadline();
        assert_eq!(a.verdict(), Outcome::SyscallDenied("ptrace".into()));
        // Killed at the deadline, a call it was stopped in on the way out does not count.
        let mut late = Invocation::default();
        let Kill = late.on_deadline();
        let Kill = late.on_denied("ptrace".into());
        assert_eq!(late.verdict(), Outcome::Timeout);
        let mut b = Invocation::default();
        let Kill = b.on_output_over();
        let Kill = b.on_client_gone();
        let Kill = b.on_deadline();
        assert_eq!(b.verdict(), Outcome::OutputTooLarge);
        let mut c = Invocation::default();
        let Kill = c.on_client_gone();
        let Kill = c.on_bad_output("x".into());
        c.on_exit(ExitStatus::Signaled(9));
        assert_eq!(c.verdict(), Outcome::ClientGone);
        let mut d = Invocation::default();
        let Kill = d.on_unsupervised();
        assert!(matches!(d.verdict(), Outcome::SetupFailed(_)));
        assert!(d.doomed());
    }

    #[test]
    fn an_oom_kill_explains_failures_but_not_attacks_or_success() {
        let mut crash = Invocation::default();
        crash.on_exit(ExitStatus::Signaled(9));
        crash.on_usage(&usage(1));
        assert_eq!(crash.verdict(), Outcome::OutOfMemory);
        let mut late = Invocation::default();
        let Kill = late.on_deadline();
        late.on_usage(&usage(2));
        assert_eq!(late.verdict(), Outcome::OutOfMemory);
        let mut attack = Invocation::default();
        let Kill = attack.on_denied("bpf".into());
        attack.on_usage(&usage(1));
        assert_eq!(attack.verdict(), Outcome::SyscallDenied("bpf".into()));
        // A grandchild was OOM-killed, and the handler still answered and exited 0.
        let mut fine = Invocation::default();
        fine.on_head_sent();
        fine.on_exit(ExitStatus::Exited(0));
        fine.on_usage(&usage(1));
        assert_eq!(fine.verdict(), Outcome::Ok);
        let mut none = Invocation::default();
        none.on_head_sent();
        none.on_exit(ExitStatus::Exited(0));
        none.on_usage(&usage(0));
        assert_eq!(none.verdict(), Outcome::Ok);
    }

    #[test]
    fn a_whole_response_is_ok_whatever_follows_and_an_earlier_failure_is_not() {
        let mut whole = Invocation::default();
        whole.on_head_sent();
        whole.on_whole();
        assert!(whole.doomed(), "the rest is teardown");
        let Kill = whole.on_deadline();
        whole.on_exit(ExitStatus::Signaled(9));
        whole.on_usage(&usage(1));
        assert_eq!(whole.verdict(), Outcome::Ok);
        let mut late = Invocation::default();
        late.on_head_sent();
        let Kill = late.on_output_over();
        late.on_whole();
        assert_eq!(late.verdict(), Outcome::OutputTooLarge);
    }

    #[test]
    fn the_first_exit_status_is_kept() {
        let mut i = Invocation::default();
        i.on_exit(ExitStatus::Exited(2));
        i.on_exit(ExitStatus::Signaled(9));
        assert_eq!(i.verdict(), Outcome::Crashed("exited with status 2".into()));
    }
}
