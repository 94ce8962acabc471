//! The dotted version vector set, after Almeida et al. (DAIS 2014) and Riak's `dvvset`.

use std::cmp::Ordering;

use serde::{Deserialize, Serialize};

use crate::{Dot, ReplicaId, VersionVector};

/// One replica's part of a [`DvvSet`]: its counter (the number of events of that replica
/// the set has seen) and the values of its latest events that are still live, newest first.
///
/// Invariant: `values.len() <= counter`. The value `values[i]` was written by the event
/// (dot) `(id, counter - i)`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub(crate) struct Entry<V> {
    pub(crate) id: ReplicaId,
    pub(crate) counter: u64,
    pub(crate) values: Vec<V>,
}

/// A dotted version vector set: the concurrent values of one key (siblings), each tagged
/// with the event (dot) that wrote it, plus the causal history of the key, in space
/// proportional to the number of replicas plus the number of siblings.
///
/// Entries are sorted by replica id and there is at most one per replica. `anonymous`
/// holds values that have no dot yet: the value a client offers before a coordinator
/// registers it ([`DvvSet::with_context`]), or the result of [`DvvSet::reconcile`].
///
/// # Laws
///
/// - [`sync`](Self::sync) is commutative, associative and idempotent (up to the order of
///   anonymous values), and keeps exactly the values that neither side has causally
///   overwritten.
/// - `join(sync(a, b)) == join(a).merge(join(b))`.
/// - [`update`](Self::update) discards exactly the values whose dots the client's context
///   covers and adds the new value with a dot no other event has.
/// - The set has at most one entry per replica id, whatever the number of updates.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct DvvSet<V> {
    pub(crate) entries: Vec<Entry<V>>,
    pub(crate) anonymous: Vec<V>,
}

impl<V> Default for DvvSet<V> {
    /// The set of a key never written: no values, empty history.
    fn default() -> Self {
        Self {
            entries: Vec::new(),
            anonymous: Vec::new(),
        }
    }
}

impl<V: Clone + PartialEq> DvvSet<V> {
    /// A value with no causal context: a client that has read nothing.
    ///
    /// ```
    /// use dotkv_versioning::DvvSet;
    /// let set = DvvSet::new("v");
    /// assert_eq!(set.values(), vec![&"v"]);
    /// assert!(set.join().is_empty());
    /// ```
    pub fn new(value: V) -> Self {
        Self {
            entries: Vec::new(),
            anonymous: vec![value],
        }
    }

    /// A value written by a client that has seen `context` (the [`join`](Self::join) of a
    /// read). The value is anonymous until a coordinator registers it.
    pub fn with_context(context: &VersionVector, value: V) -> Self {
        let entries = context
            .iter()
            .map(|(id, counter)| Entry {
                id,
                counter,
                values: Vec::new(),
            })
            .collect();
        Self {
            entries,
            anonymous: vec![value],
        }
    }

    /// Merges two sets (replica synchronization): the result knows both histories and
    /// holds exactly the values neither side has causally overwritten.
    ///
    /// ```
    /// use dotkv_versioning::{DvvSet, ReplicaId, VersionVector};
    /// let (a, b) = (ReplicaId(1), ReplicaId(2));
    /// let on_a = DvvSet::default().update(&VersionVector::new(), "x", a);
    /// let on_b = DvvSet::default().update(&VersionVector::new(), "y", b);
    /// let merged = on_a.sync(&on_b);
    /// assert_eq!(merged.size(), 2); // concurrent: both survive as siblings
    /// assert_eq!(merged.sync(&on_a), merged); // a replica that knows more wins
    /// ```
    pub fn sync(&self, other: &Self) -> Self {
        let anonymous = if self.less(other) {
            other.anonymous.clone()
        } else if other.less(self) {
            self.anonymous.clone()
        } else {
            union(&self.anonymous, &other.anonymous)
        };
        let mut entries = Vec::with_capacity(self.entries.len().max(other.entries.len()));
        let (mut left, mut right) = (
            self.entries.iter().peekable(),
            other.entries.iter().peekable(),
        );
        loop {
            let next = match (left.peek(), right.peek()) {
                (None, None) => break,
                (Some(_), None) => left.next().cloned(),
                (None, Some(_)) => right.next().cloned(),
                (Some(l), Some(r)) => match l.id.cmp(&r.id) {
                    Ordering::Less => left.next().cloned(),
                    Ordering::Greater => right.next().cloned(),
                    Ordering::Equal => {
                        let (l, r) = (left.next(), right.next());
                        l.zip(r).map(|(l, r)| merge_entry(l, r))
                    }
                },
            };
            entries.extend(next);
        }
        Self { entries, anonymous }
    }

    /// Records a write at a coordinator: `self` is the coordinator's stored set, `context`
    /// what the writing client had read, `replica` the coordinator's id. The result drops
    /// every value `context` covers, keeps the others as siblings, and adds `value` under
    /// a new dot of `replica`.
    ///
    /// ```
    /// use dotkv_versioning::{DvvSet, ReplicaId, VersionVector};
    /// let r = ReplicaId(7);
    /// let v1 = DvvSet::default().update(&VersionVector::new(), "v1", r);
    /// let v2 = v1.update(&v1.join(), "v2", r); // the client had read v1
    /// assert_eq!(v2.values(), vec![&"v2"]);
    /// let v3 = v2.update(&v1.join(), "v3", r); // a stale client: v2 survives
    /// assert_eq!(v3.size(), 2);
    /// ```
    pub fn update(&self, context: &VersionVector, value: V, replica: ReplicaId) -> Self {
        let client = Self::with_context(context, value);
        self.update_with_client(client, replica)
    }

    /// [`update`](Self::update) with the client's set as the paper states it: `client`
    /// holds the context and the new (anonymous) value; any further anonymous values in it
    /// are ignored.
    pub fn update_with_client(&self, client: Self, replica: ReplicaId) -> Self {
        let Self {
            entries,
            mut anonymous,
        } = client;
        let Some(value) = anonymous.pop() else {
            // No new value: the client only carries a context; merge its history.
            return self.sync(&Self {
                entries,
                anonymous: Vec::new(),
            });
        };
        let synced = Self {
            entries,
            anonymous: Vec::new(),
        }
        .sync(self);
        let Self {
            mut entries,
            anonymous,
        } = synced;
        record_event(&mut entries, replica, value);
        Self { entries, anonymous }
    }

    /// A set holding one value chosen by `merge` from all the siblings, with the whole
    /// history as context: what a client writes back to resolve siblings. The new value is
    /// anonymous; a coordinator registers it with [`update_with_client`](Self::update_with_client).
    ///
    /// ```
    /// use dotkv_versioning::{DvvSet, ReplicaId, VersionVector};
    /// let a = DvvSet::default().update(&VersionVector::new(), 1, ReplicaId(1));
    /// let both = a.sync(&DvvSet::default().update(&VersionVector::new(), 2, ReplicaId(2)));
    /// let resolved = both.reconcile(|values| values.into_iter().copied().sum());
    /// assert_eq!(resolved.values(), vec![&3]);
    /// ```
    pub fn reconcile(&self, merge: impl FnOnce(Vec<&V>) -> V) -> Self {
        let value = merge(self.values());
        Self::with_context(&self.join(), value)
    }

    /// Last writer wins: keeps the greatest sibling by `cmp` (e.g. by a timestamp inside the
    /// value) and the whole history. `None` when there is no value.
    pub fn last_writer_wins(&self, mut cmp: impl FnMut(&V, &V) -> Ordering) -> Option<Self> {
        let winner = self.values().into_iter().max_by(|a, b| cmp(a, b))?.clone();
        Some(Self::with_context(&self.join(), winner))
    }
}

impl<V> DvvSet<V> {
    /// The version vector of the set's history: the context a client receives with a read.
    pub fn join(&self) -> VersionVector {
        VersionVector::from_sorted(self.entries.iter().map(|e| (e.id, e.counter)))
    }

    /// All sibling values: anonymous ones first, then by replica id, newest first.
    pub fn values(&self) -> Vec<&V> {
        self.anonymous
            .iter()
            .chain(self.entries.iter().flat_map(|e| e.values.iter()))
            .collect()
    }

    /// The values with the dots that wrote them (`None` for anonymous values).
    pub fn dotted_values(&self) -> impl Iterator<Item = (Option<Dot>, &V)> {
        let anonymous = self.anonymous.iter().map(|v| (None, v));
        let dotted = self.entries.iter().flat_map(|e| {
            e.values.iter().zip(0..).map(move |(v, age)| {
                (
                    Some(Dot {
                        replica: e.id,
                        counter: e.counter - age,
                    }),
                    v,
                )
            })
        });
        anonymous.chain(dotted)
    }

    /// Consumes the set, returning its values in the order of [`values`](Self::values).
    pub fn into_values(self) -> Vec<V> {
        let mut out = self.anonymous;
        out.extend(self.entries.into_iter().flat_map(|e| e.values));
        out
    }

    /// The replica ids in the history, ascending.
    pub fn ids(&self) -> Vec<ReplicaId> {
        self.entries.iter().map(|e| e.id).collect()
    }

    /// The number of sibling values.
    pub fn size(&self) -> usize {
        self.anonymous.len() + self.entries.iter().map(|e| e.values.len()).sum::<usize>()
    }

    /// Whether `self`'s history is strictly contained in `other`'s.
    pub fn less(&self, other: &Self) -> bool {
        greater(&other.entries, &self.entries)
    }

    /// Whether both histories are the same (values aside).
    pub fn equal(&self, other: &Self) -> bool {
        self.entries.len() == other.entries.len()
            && self
                .entries
                .iter()
                .zip(&other.entries)
                .all(|(a, b)| a.id == b.id && a.counter == b.counter)
    }

    /// How the two histories relate: `Some(Less)`, `Some(Equal)`, `Some(Greater)`, or
    /// `None` when they are concurrent.
    pub fn causal_cmp(&self, other: &Self) -> Option<Ordering> {
        if self.equal(other) {
            Some(Ordering::Equal)
        } else if self.less(other) {
            Some(Ordering::Less)
        } else if other.less(self) {
            Some(Ordering::Greater)
        } else {
            None
        }
    }

    /// Applies `f` to every value, keeping the history.
    pub fn map<W>(self, mut f: impl FnMut(V) -> W) -> DvvSet<W> {
        DvvSet {
            entries: self
                .entries
                .into_iter()
                .map(|e| Entry {
                    id: e.id,
                    counter: e.counter,
                    values: e.values.into_iter().map(&mut f).collect(),
                })
                .collect(),
            anonymous: self.anonymous.into_iter().map(f).collect(),
        }
    }

    /// Checks the invariants a decoded set must hold: entries sorted by id without
    /// duplicates, and no entry with more values than events.
    pub(crate) fn check(&self) -> Result<(), &'static str> {
        if self.entries.windows(2).any(|w| w[0].id >= w[1].id) {
            return Err("entries not sorted by replica id");
        }
        if self
            .entries
            .iter()
            .any(|e| e.values.len() as u64 > e.counter)
        {
            return Err("an entry has more values than events");
        }
        Ok(())
    }
}

/// Merges two entries of the same replica: the larger counter wins, and of its values only
/// those the other side has not overwritten are kept (Riak `dvvset:merge/5`).
fn merge_entry<V: Clone>(a: &Entry<V>, b: &Entry<V>) -> Entry<V> {
    let (hi, lo) = if a.counter >= b.counter {
        (a, b)
    } else {
        (b, a)
    };
    // `lo` has seen every dot of this replica up to lo.counter and still holds the values
    // of the last lo.values.len() of them; dots of `hi` at or below lo.counter that `lo`
    // no longer holds were overwritten, so `hi` keeps only values with dots above
    // lo.counter - lo.values.len().
    let hi_first_live = hi.counter - hi.values.len() as u64;
    let lo_first_live = lo.counter - lo.values.len() as u64;
    let values = if hi_first_live >= lo_first_live {
        hi.values.clone()
    } else {
        let keep = (hi.counter - lo_first_live) as usize;
        hi.values[..keep].to_vec()
    };
    Entry {
        id: hi.id,
        counter: hi.counter,
        values,
    }
}

/// Adds the event `(replica, counter + 1)` with `value`, keeping entries sorted.
fn record_event<V>(entries: &mut Vec<Entry<V>>, replica: ReplicaId, value: V) {
    match entries.binary_search_by(|e| e.id.cmp(&replica)) {
        Ok(at) => {
            let entry = &mut entries[at];
            entry.counter += 1;
            entry.values.insert(0, value);
        }
        Err(at) => entries.insert(
            at,
            Entry {
                id: replica,
                counter: 1,
                values: vec![value],
            },
        ),
    }
}

/// Whether history `a` strictly contains history `b` (both sorted by id).
fn greater<V>(a: &[Entry<V>], b: &[Entry<V>]) -> bool {
    let (mut i, mut j, mut strict) = (0, 0, false);
    loop {
        match (a.get(i), b.get(j)) {
            (None, None) => return strict,
            (Some(_), None) => return true,
            (None, Some(_)) => return false,
            (Some(x), Some(y)) => match x.id.cmp(&y.id) {
                Ordering::Equal => {
                    match x.counter.cmp(&y.counter) {
                        Ordering::Less => return false,
                        Ordering::Greater => strict = true,
                        Ordering::Equal => {}
                    }
                    i += 1;
                    j += 1;
                }
                // `a` knows a replica `b` does not.
                Ordering::Less => {
                    strict = true;
                    i += 1;
                }
                // `b` knows a replica `a` does not.
                Ordering::Greater => return false,
            },
        }
    }
}

/// The values of `a` followed by those of `b` not already in `a` (anonymous values have no
/// dot to tell copies apart, so equal values are one value; this keeps `sync` idempotent).
fn union<V: Clone + PartialEq>(a: &[V], b: &[V]) -> Vec<V> {
    let mut out = a.to_vec();
    out.extend(b.iter().filter(|v| !a.contains(v)).cloned());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: ReplicaId = ReplicaId(0xA);
    const B: ReplicaId = ReplicaId(0xB);

    fn none() -> VersionVector {
        VersionVector::new()
    }

    fn sorted<'a>(set: &'a DvvSet<&'a str>) -> Vec<&'a str> {
        let mut values: Vec<&str> = set.values().into_iter().copied().collect();
        values.sort_unstable();
        values
    }

    #[test]
    fn two_writes_without_context_give_two_siblings() {
        let stored = DvvSet::default()
            .update(&none(), "x", A)
            .update(&none(), "y", A);
        assert_eq!(sorted(&stored), ["x", "y"]);
        // The same through two coordinators, then replica sync.
        let on_a = DvvSet::default().update(&none(), "x", A);
        let on_b = DvvSet::default().update(&none(), "y", B);
        assert_eq!(sorted(&on_a.sync(&on_b)), ["x", "y"]);
    }

    #[test]
    fn a_write_with_the_context_of_a_read_that_saw_both_replaces_both() {
        let on_a = DvvSet::default().update(&none(), "x", A);
        let on_b = DvvSet::default().update(&none(), "y", B);
        let read = on_a.sync(&on_b);
        let written = on_a.update(&read.join(), "z", A);
        assert_eq!(sorted(&written), ["z"]);
        // B catches up by sync and also holds only z.
        assert_eq!(sorted(&on_b.sync(&written)), ["z"]);
    }

    #[test]
    fn a_stale_context_keeps_the_sibling_it_did_not_see() {
        let v1 = DvvSet::default().update(&none(), "v1", A);
        let stale = v1.join();
        let v2 = v1.update(&stale, "v2", A);
        let v3 = v2.update(&stale, "v3", A);
        assert_eq!(sorted(&v3), ["v2", "v3"]);
        let dots: Vec<_> = v3
            .dotted_values()
            .map(|(dot, _)| dot.unwrap().counter)
            .collect();
        assert_eq!(dots, [3, 2]);
    }

    #[test]
    fn a_replica_that_missed_updates_catches_up_by_sync() {
        let base = DvvSet::default().update(&none(), "v1", A);
        let behind = base.clone();
        let ahead = base.update(&base.join(), "v2", A).update(&none(), "v3", B);
        assert!(behind.less(&ahead));
        let caught_up = behind.sync(&ahead);
        assert_eq!(caught_up, ahead);
        assert!(caught_up.equal(&ahead));
        assert_eq!(sorted(&caught_up), ["v2", "v3"]);
    }

    #[test]
    fn a_tombstone_with_a_covering_context_leaves_only_the_tombstone() {
        let stored: DvvSet<Option<&str>> = DvvSet::default()
            .update(&none(), Some("x"), A)
            .sync(&DvvSet::default().update(&none(), Some("y"), B));
        let deleted = stored.update(&stored.join(), None, B);
        assert_eq!(deleted.values(), vec![&None]);
        assert_eq!(deleted.join().get(A), 1);
        assert_eq!(deleted.join().get(B), 2);
    }

    #[test]
    fn reconcile_and_last_writer_wins_keep_the_history() {
        let stored = DvvSet::default()
            .update(&none(), 3, A)
            .update(&none(), 5, A);
        let resolved = stored.reconcile(|values| values.into_iter().max().copied().unwrap_or(0));
        assert_eq!(resolved.values(), vec![&5]);
        assert_eq!(resolved.join(), stored.join());
        let written = stored.update_with_client(resolved, B);
        assert_eq!(written.values(), vec![&5]);
        let lww = stored.last_writer_wins(Ord::cmp).unwrap();
        assert_eq!(lww.values(), vec![&5]);
        assert!(DvvSet::<u8>::default().last_writer_wins(Ord::cmp).is_none());
    }

    #[test]
    fn causal_comparison() {
        let v1 = DvvSet::default().update(&none(), "v1", A);
        let v2 = v1.update(&v1.join(), "v2", A);
        let other = DvvSet::default().update(&none(), "w", B);
        assert_eq!(v1.causal_cmp(&v2), Some(Ordering::Less));
        assert_eq!(v2.causal_cmp(&v1), Some(Ordering::Greater));
        assert_eq!(v2.causal_cmp(&v2.clone()), Some(Ordering::Equal));
        assert_eq!(v2.causal_cmp(&other), None);
        assert_eq!(v2.ids(), vec![A]);
        assert_eq!(v2.sync(&other).ids(), vec![A, B]);
    }
}
