//! Counting replies towards a quorum: a plain state machine, no IO.

use crate::Error;

/// Where a quorum stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Progress {
    /// Not decided yet: more replies are needed and can still come.
    Pending,
    /// At least `required` successes.
    Reached,
    /// Too many failures: `required` successes can no longer happen.
    Failed,
}

/// The replies of `total` replicas, of which `required` must succeed.
#[derive(Debug)]
pub(crate) struct Quorum {
    required: usize,
    total: usize,
    succeeded: usize,
    errors: Vec<String>,
}

impl Quorum {
    pub(crate) fn new(required: usize, total: usize) -> Self {
        Self {
            required,
            total,
            succeeded: 0,
            errors: Vec::new(),
        }
    }

    pub(crate) fn success(&mut self) -> Progress {
        self.succeeded += 1;
        self.progress()
    }

    /// One more reply may come (a fallback tried in place of a replica that failed).
    pub(crate) fn add_attempt(&mut self) {
        self.total += 1;
    }

    pub(crate) fn failure(&mut self, error: String) -> Progress {
        self.errors.push(error);
        self.progress()
    }

    pub(crate) fn progress(&self) -> Progress {
        let outstanding = self.total - self.succeeded - self.errors.len();
        if self.succeeded >= self.required {
            Progress::Reached
        } else if self.succeeded + outstanding < self.required {
            Progress::Failed
        } else {
            Progress::Pending
        }
    }

    /// The error of a failed quorum; `what` names the replies (`acknowledgements`, `replies`).
    pub(crate) fn into_error(self, what: &str) -> Error {
        Error::QuorumNotReached {
            what: what.into(),
            required: self.required,
            succeeded: self.succeeded,
            errors: self.errors,
        }
    }
}

/// A request's quorums. A write's during a transition: `W` acknowledgements among the current ring's
/// owners *and* `W` among the pending ring's (as Garage requires a quorum in every active
/// layout), so that an acknowledged write is on a quorum of the owners before and after
/// the switch. Without a transition only the current quorum counts.
///
/// With PW, `pw` of the current ring's acknowledgements must also come from primaries
/// (owners), not fallbacks.
#[derive(Debug)]
pub(crate) struct Quorums {
    current: Quorum,
    pending: Option<Quorum>,
    primaries: Option<Quorum>,
    /// What the replies are, for errors: `acknowledgements` (writes) or `replies` (reads).
    what: &'static str,
    /// The request option the primaries' quorum comes from: `pw` or `pr`.
    primary_option: &'static str,
}

/// Where one reply counts.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Counts {
    /// In the current ring's quorum (an owner, or a fallback standing in for one).
    pub(crate) current: bool,
    /// In the pending ring's quorum.
    pub(crate) pending: bool,
    /// In the primaries' quorum (an owner in the current ring).
    pub(crate) primary: bool,
}

impl Quorums {
    /// `w` of `current` owners, `w` of `pending` owners when a transition runs, and `pw`
    /// of the `current` primaries when `pw > 0`.
    pub(crate) fn new(w: usize, pw: usize, current: usize, pending: Option<usize>) -> Self {
        Self {
            current: Quorum::new(w, current),
            pending: pending.map(|total| Quorum::new(w, total)),
            primaries: (pw > 0).then(|| Quorum::new(pw, current)),
            what: "acknowledgements",
            primary_option: "pw",
        }
    }

    /// A read's quorums: `r` replies of `current` replicas (fallbacks included), `pr` of
    /// them from primaries when `pr > 0`.
    pub(crate) fn for_read(r: usize, pr: usize, current: usize) -> Self {
        Self {
            what: "replies",
            primary_option: "pr",
            ..Self::new(r, pr, current, None)
        }
    }

    /// A fallback is tried in place of a current replica that failed.
    pub(crate) fn add_fallback(&mut self) {
        self.current.add_attempt();
    }

    /// Counts one replica's answer toward the quorums it belongs to.
    pub(crate) fn record(&mut self, counts: Counts, outcome: Result<(), String>) -> Progress {
        let count = |quorum: &mut Quorum| match &outcome {
            Ok(()) => quorum.success(),
            Err(error) => quorum.failure(error.clone()),
        };
        if counts.current {
            count(&mut self.current);
        }
        if let (true, Some(pending)) = (counts.pending, &mut self.pending) {
            count(pending);
        }
        if let (true, Some(primaries)) = (counts.primary, &mut self.primaries) {
            count(primaries);
        }
        self.progress()
    }

    /// Reached when every quorum is; failed as soon as one is.
    pub(crate) fn progress(&self) -> Progress {
        let quorums = std::iter::once(&self.current)
            .chain(&self.pending)
            .chain(&self.primaries);
        let mut progress = Progress::Reached;
        for quorum in quorums {
            match quorum.progress() {
                Progress::Failed => return Progress::Failed,
                Progress::Pending => progress = Progress::Pending,
                Progress::Reached => {}
            }
        }
        progress
    }

    /// The error of the quorum that failed — the primaries', the incoming owners', the
    /// current one's, in that order — or, when none failed outright but the replies ran
    /// out, of the first that was not reached.
    pub(crate) fn into_error(self) -> Error {
        let what = self.what;
        let labelled = [
            self.primaries.map(|q| {
                let label = format!("{what} from primaries ({})", self.primary_option);
                (q, label)
            }),
            self.pending
                .map(|q| (q, format!("{what} among the incoming owners"))),
            Some((self.current, what.to_owned())),
        ];
        let mut quorums: Vec<(Quorum, String)> = labelled.into_iter().flatten().collect();
        let at = quorums
            .iter()
            .position(|(q, _)| q.progress() == Progress::Failed)
            .or_else(|| {
                quorums
                    .iter()
                    .position(|(q, _)| q.progress() != Progress::Reached)
            })
            .unwrap_or(quorums.len() - 1);
        let (quorum, label) = quorums.swap_remove(at);
        quorum.into_error(&label)
    }

    /// An owner that was not asked (convicted by the failure detector): it cannot count
    /// as a primary.
    pub(crate) fn skip_primary(&mut self, error: String) {
        if let Some(primaries) = &mut self.primaries {
            primaries.failure(error);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reached_at_required_successes() {
        let mut q = Quorum::new(2, 3);
        assert_eq!(q.success(), Progress::Pending);
        assert_eq!(q.success(), Progress::Reached);
    }

    #[test]
    fn failed_as_soon_as_it_cannot_be_reached() {
        let mut q = Quorum::new(2, 3);
        assert_eq!(q.failure("a".into()), Progress::Pending);
        assert_eq!(q.failure("b".into()), Progress::Failed);
        let Error::QuorumNotReached {
            required,
            succeeded,
            errors,
            ..
        } = q.into_error("replies")
        else {
            panic!("wrong error")
        };
        assert_eq!((required, succeeded, errors.len()), (2, 0, 2));
    }

    fn at(current: bool, pending: bool) -> Counts {
        Counts {
            current,
            pending,
            primary: current,
        }
    }

    #[test]
    fn fallbacks_count_toward_w_but_not_pw() {
        let fallback = Counts {
            current: true,
            pending: false,
            primary: false,
        };
        // W = 2, PW = 2 of 3 owners: the coordinator, a fallback for a dead owner.
        let mut q = Quorums::new(2, 2, 3, None);
        q.record(at(true, false), Ok(()));
        q.record(at(true, false), Err("b unreachable".into()));
        q.add_fallback();
        assert_eq!(q.record(fallback, Ok(())), Progress::Pending);
        assert_eq!(
            q.record(at(true, false), Err("c unreachable".into())),
            Progress::Failed
        );
        let Error::QuorumNotReached { what, .. } = q.into_error() else {
            panic!("wrong error")
        };
        assert!(what.contains("primaries"), "{what}");
        // Without PW the fallback's acknowledgement completes W = 2.
        let mut q = Quorums::new(2, 0, 3, None);
        q.record(at(true, false), Ok(()));
        q.record(at(true, false), Err("b unreachable".into()));
        q.add_fallback();
        assert_eq!(q.record(fallback, Ok(())), Progress::Reached);
    }

    #[test]
    fn a_write_during_a_transition_needs_both_quorums() {
        // Current owners a, b, c; pending owners b, c, d.
        let mut q = Quorums::new(2, 0, 3, Some(3));
        assert_eq!(q.record(at(true, false), Ok(())), Progress::Pending); // a
        assert_eq!(q.record(at(false, true), Ok(())), Progress::Pending); // d
        assert_eq!(q.record(at(true, true), Ok(())), Progress::Reached); // b
        // a acknowledges; d and b fail: two of the incoming owners are gone.
        let mut q = Quorums::new(2, 0, 3, Some(3));
        q.record(at(true, false), Ok(()));
        assert_eq!(
            q.record(at(false, true), Err("d down".into())),
            Progress::Pending
        );
        assert_eq!(
            q.record(at(true, true), Err("b down".into())),
            Progress::Failed
        );
        let Error::QuorumNotReached { what, .. } = q.into_error() else {
            panic!("wrong error")
        };
        assert!(what.contains("incoming"), "{what}");
    }

    #[test]
    fn more_required_than_replicas_fails_at_once() {
        assert_eq!(Quorum::new(3, 2).progress(), Progress::Failed);
    }
}
