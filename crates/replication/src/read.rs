//! A get's replica reads: the object from one replica, digests from the others R needs,
//! more replicas only when one fails, is slow, or a read repair is drawn.
//!
//! ```text
//!  ask   --> the coordinator itself when it owns the key (else the first healthy owner)
//!            for the object, the next R-1 owners for a digest of theirs; a convicted
//!            owner's place is taken by a fallback, asked for its hints (an object)
//!        --> with R = N, or drawn with `read_repair_chance`: every owner at once
//!  wait  --> a digest counts toward R once it equals an object's digest; one that
//!            differs is followed by a read of that replica's object, which then counts
//!        --> a replica that fails, or that has not answered after `speculative_retry_ms`
//!            while R is not reached: the next owner not asked yet, then fallbacks
//!  answer --> the merge of the objects once R replies (PR from owners) count
//!  behind --> wait for the replies still in flight, then write the merge to every owner
//!            that answered with less (read repair; fallbacks' hints reach the owner by
//!            hinted handoff)
//! ```
//!
//! Equal states encode to equal bytes (a law of the versioning crate), so equal digests
//! mean equal replicas: a read that finds the consulted replicas in agreement moves one
//! object and R-1 eight-byte digests.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use dotkv_merkle::object_digest;
use dotkv_ring::NodeIndex;
use dotkv_storage::StorageExt;
use futures::future::BoxFuture;
use futures::stream::{FuturesUnordered, StreamExt};

use crate::node::Fallbacks;
use crate::object::{decode_object, encode_object, is_stale};
use crate::quorum::{Counts, Progress, Quorums};
use crate::{Error, Node, Object, Result, Routing};

/// What a read asks of one replica.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ask {
    /// Its object.
    Object,
    /// The digest of its object.
    Digest,
    /// A fallback's hints for the key, merged (an object; never repaired).
    Hints,
}

/// A replica's answer: the object it holds and the digest of its encoding, or the digest
/// alone (`None`: it holds nothing).
enum Answer {
    Object(Option<Object>, Option<u64>),
    Digest(Option<u64>),
}

type Reply = (NodeIndex, Ask, Result<Answer>);

/// One replica that answered, and what is known of what it holds.
struct Replied {
    node: NodeIndex,
    /// The digest of what it holds.
    digest: Option<u64>,
    /// What it holds, when it sent its object.
    object: Option<Option<Object>>,
    /// A fallback's hints: merged into the answer, never repaired.
    hinted: bool,
}

/// How a read chooses and counts its replicas.
pub(crate) struct ReadPlan {
    pub(crate) r: usize,
    pub(crate) pr: usize,
    /// Ask every owner at once (R = N, or a drawn read repair).
    pub(crate) every_owner: bool,
    /// The speculative retry delay; `None` is off.
    pub(crate) speculative: Option<Duration>,
}

/// One get in progress.
pub(crate) struct ReadRound {
    node: Node,
    routing: Arc<Routing>,
    partition: u32,
    key: Bytes,
    /// Owners (or their fallbacks) not asked yet, in the order they will be.
    unasked: VecDeque<(NodeIndex, bool)>,
    fallbacks: Fallbacks,
    quorums: Quorums,
    in_flight: FuturesUnordered<BoxFuture<'static, Reply>>,
    /// Object reads in flight (a read needs one object before digests can count).
    objects_in_flight: usize,
    /// Replicas that answered, in the order they did.
    replied: Vec<Replied>,
    /// Digests not yet compared: no object has arrived to compare them with.
    uncompared: Vec<(NodeIndex, Option<u64>)>,
    /// The merge of every object received.
    merged: Object,
    /// Whether any object was received.
    has_object: bool,
    /// Whether the client has its answer: failures are no longer replaced.
    answered: bool,
}

impl ReadRound {
    /// Plans the read of `key` and asks its first replicas.
    pub(crate) fn start(node: Node, routing: Arc<Routing>, key: Bytes, plan: &ReadPlan) -> Self {
        let partition = routing.ring.partition_of(&key);
        let owners = routing.ring.preference_list(partition);
        let mut fallbacks = Fallbacks::of(&routing, partition);
        let mut quorums = Quorums::for_read(plan.r, plan.pr, owners.len());
        // The coordinator first when it owns the key: its object costs no round trip.
        let mut order: Vec<NodeIndex> = owners.to_vec();
        if let Some(at) = order.iter().position(|&n| Some(n) == routing.me) {
            order[..=at].rotate_right(1);
        }
        let is_down = |id: &str| node.cluster().is_down(id);
        let mut unasked = VecDeque::with_capacity(order.len());
        for owner in order {
            // A convicted owner is not asked: the next healthy fallback's hints are.
            let substitute = (Some(owner) != routing.me && is_down(routing.id(owner)))
                .then(|| fallbacks.next(&routing, is_down))
                .flatten();
            match substitute {
                Some(fallback) => {
                    quorums.skip_primary(format!("{}: down", routing.id(owner)));
                    unasked.push_back((fallback, true));
                }
                None => unasked.push_back((owner, false)),
            }
        }
        let mut round = Self {
            node,
            routing,
            partition,
            key,
            unasked,
            fallbacks,
            quorums,
            in_flight: FuturesUnordered::new(),
            objects_in_flight: 0,
            replied: Vec::new(),
            uncompared: Vec::new(),
            merged: Object::default(),
            has_object: false,
            answered: false,
        };
        let first = if plan.every_owner {
            round.unasked.len()
        } else {
            plan.r.min(round.unasked.len())
        };
        for _ in 0..first {
            round.ask_next();
        }
        round
    }

    /// Waits until R replies count, then answers with their merge and hands the rest of
    /// the round to a background task that repairs what differs.
    pub(crate) async fn run(mut self, speculative: Option<Duration>) -> Result<Object> {
        // One timer for the round, registered at its first poll, re-armed at each retry.
        let retry = tokio::time::sleep(speculative.unwrap_or_default());
        tokio::pin!(retry);
        while self.quorums.progress() == Progress::Pending {
            tokio::select! {
                reply = self.in_flight.next() => match reply {
                    Some(reply) => self.on_reply(reply),
                    // Nothing in flight and nobody left to ask.
                    None => break,
                },
                () = &mut retry, if speculative.is_some() && !self.unasked.is_empty() => {
                    tracing::debug!("speculative read of another replica");
                    self.node.metrics().speculative_read();
                    self.ask_next();
                    if let Some(delay) = speculative {
                        retry.as_mut().reset(tokio::time::Instant::now() + delay);
                    }
                }
            }
        }
        if self.quorums.progress() != Progress::Reached {
            return Err(self.quorums.into_error());
        }
        self.answered = true;
        // The common case: every replica asked has answered and they agree; nothing is
        // left to wait for or repair, and no task is spawned.
        if self.in_flight.is_empty() && self.agree() {
            return Ok(self.merged);
        }
        let answer = self.merged.clone();
        tokio::spawn(self.finish());
        Ok(answer)
    }

    /// Asks the next replica: for its object while the read has none coming, else for a
    /// digest.
    fn ask_next(&mut self) {
        let Some((node, hinted)) = self.unasked.pop_front() else {
            return;
        };
        let ask = if hinted {
            Ask::Hints
        } else if self.has_object || self.objects_in_flight > 0 {
            Ask::Digest
        } else {
            Ask::Object
        };
        self.ask(node, ask);
    }

    fn ask(&mut self, node: NodeIndex, ask: Ask) {
        if ask != Ask::Digest {
            self.objects_in_flight += 1;
        }
        let key = self.key.clone();
        let (routing, partition) = (&self.routing, self.partition);
        let future = match ask {
            Ask::Hints => self.node.read_hints_of(routing, node, key),
            Ask::Object | Ask::Digest => {
                let digest_only = ask == Ask::Digest;
                (self.node).read_replica_answer(routing, node, partition, key, digest_only)
            }
        };
        self.in_flight
            .push(Box::pin(async move { (node, ask, future.await) }));
    }

    fn on_reply(&mut self, (node, ask, result): Reply) {
        if ask != Ask::Digest {
            self.objects_in_flight -= 1;
        }
        let me = self.routing.me;
        match result {
            Ok(answer) => {
                if Some(node) != me {
                    self.node.cluster().heard_from(self.routing.id(node));
                }
                match answer {
                    Answer::Object(held, digest) => {
                        if let Some(held) = &held {
                            self.merged = std::mem::take(&mut self.merged).sync(held);
                        }
                        self.has_object = true;
                        self.replied.push(Replied {
                            node,
                            digest,
                            object: Some(held),
                            hinted: ask == Ask::Hints,
                        });
                        self.count(ask, Ok(()));
                        self.compare_digests();
                    }
                    Answer::Digest(digest) => {
                        self.uncompared.push((node, digest));
                        self.compare_digests();
                    }
                }
            }
            Err(error) => {
                if matches!(error, Error::Unavailable(_)) && Some(node) != me {
                    self.node.cluster().refused(self.routing.id(node));
                }
                let error = format!("{}: {error}", self.routing.id(node));
                self.count(ask, Err(error));
                if !self.answered {
                    self.replace_failed();
                }
            }
        }
        self.ensure_an_object();
    }

    fn count(&mut self, ask: Ask, outcome: std::result::Result<(), String>) {
        let counts = Counts {
            current: true,
            pending: false,
            primary: ask != Ask::Hints,
        };
        self.quorums.record(counts, outcome);
    }

    /// Counts each digest equal to an object's; asks a replica whose digest differs from
    /// every object's for its object.
    fn compare_digests(&mut self) {
        if !self.has_object {
            return;
        }
        for (node, digest) in std::mem::take(&mut self.uncompared) {
            let known = self
                .replied
                .iter()
                .any(|r| r.object.is_some() && r.digest == digest);
            if known {
                self.replied.push(Replied {
                    node,
                    digest,
                    object: None,
                    hinted: false,
                });
                self.count(Ask::Digest, Ok(()));
            } else {
                tracing::debug!(replica = self.routing.id(node), "digest differs");
                self.ask(node, Ask::Object);
            }
        }
    }

    /// A replica failed: the next owner not asked yet takes its place, else the next
    /// healthy fallback.
    fn replace_failed(&mut self) {
        if !self.unasked.is_empty() {
            self.ask_next();
            return;
        }
        let is_down = |id: &str| self.node.cluster().is_down(id);
        if let Some(fallback) = self.fallbacks.next(&self.routing, is_down) {
            self.quorums.add_fallback();
            self.ask(fallback, Ask::Hints);
        }
    }

    /// Digests count only against an object: when none arrived and none is coming, one
    /// replica is asked for its object (one not asked yet, else one that sent a digest).
    fn ensure_an_object(&mut self) {
        if self.has_object || self.objects_in_flight > 0 {
            return;
        }
        if !self.unasked.is_empty() {
            self.ask_next();
        } else if let Some((node, _)) = self.uncompared.pop() {
            self.ask(node, Ask::Object);
        }
    }

    /// Whether every replica that answered holds the same.
    fn agree(&self) -> bool {
        let first = self.replied.first().map(|r| r.digest);
        self.replied.iter().all(|r| Some(r.digest) == first)
    }

    /// Behind the answer: waits for the replies still in flight, then writes the merge to
    /// every owner that answered with less.
    async fn finish(mut self) {
        while let Some(reply) = self.in_flight.next().await {
            self.on_reply(reply);
        }
        if self.agree() {
            return;
        }
        let object = Bytes::from(encode_object(&self.merged));
        let complete = Some(object_digest(&object));
        let stale: Vec<NodeIndex> = self
            .replied
            .iter()
            .filter(|r| !r.hinted)
            .filter(|r| match &r.object {
                Some(held) => is_stale(held.as_ref(), &self.merged),
                None => r.digest != complete,
            })
            .map(|r| r.node)
            .collect();
        for node in stale {
            tracing::debug!(replica = self.routing.id(node), "read repair");
            self.node.metrics().read_repair();
            let result = if Some(node) == self.routing.me {
                self.node
                    .merge_local(
                        self.partition,
                        &self.key,
                        self.merged.clone(),
                        object.clone(),
                    )
                    .await
            } else {
                let write =
                    self.node
                        .write_to(&self.routing, node, self.key.clone(), object.clone());
                write.await.1.map_err(Error::from)
            };
            if let Err(error) = result {
                tracing::debug!(replica = self.routing.id(node), %error, "read repair failed");
            }
        }
    }
}

impl Node {
    /// Replica `node`'s object and its digest, or (`digest_only`) its digest alone: from
    /// the local store for this node, else over the transport.
    fn read_replica_answer(
        &self,
        routing: &Routing,
        node: NodeIndex,
        partition: u32,
        key: Bytes,
        digest_only: bool,
    ) -> BoxFuture<'static, Result<Answer>> {
        let this = self.clone();
        let local = Some(node) == routing.me;
        let addr = routing.shared_addr(node);
        Box::pin(async move {
            if digest_only {
                let digest = if local {
                    this.local_digest(partition, &key).await?
                } else {
                    this.transport().read_digest(&addr, key).await?
                };
                return Ok(Answer::Digest(digest));
            }
            let bytes = if local {
                this.store()
                    .get_object(partition, &key)
                    .await?
                    .map(Bytes::from)
            } else {
                this.transport().read_replica(&addr, key).await?
            };
            let held = bytes
                .as_deref()
                .map(|bytes| decode_object(bytes, &addr))
                .transpose()?;
            Ok(Answer::Object(held, bytes.as_deref().map(object_digest)))
        })
    }

    /// Fallback `node`'s hints for `key`, merged, and the digest of the merge.
    fn read_hints_of(
        &self,
        routing: &Routing,
        node: NodeIndex,
        key: Bytes,
    ) -> BoxFuture<'static, Result<Answer>> {
        let hints = self.read_hinted(routing, node, key);
        Box::pin(async move {
            let held = hints.await.1?;
            let digest = held
                .as_ref()
                .map(|held| object_digest(&encode_object(held)));
            Ok(Answer::Object(held, digest))
        })
    }

    /// The digest of this node's object for `key` in `partition`.
    pub(crate) async fn local_digest(&self, partition: u32, key: &[u8]) -> Result<Option<u64>> {
        Ok(self
            .store()
            .get_object(partition, key)
            .await?
            .map(|bytes| object_digest(&bytes)))
    }
}
