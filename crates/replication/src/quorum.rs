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

    #[test]
    fn more_required_than_replicas_fails_at_once() {
        assert_eq!(Quorum::new(3, 2).progress(), Progress::Failed);
    }
}
