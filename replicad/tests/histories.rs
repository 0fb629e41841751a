//! Replication histories end to end: what `Begin` records, resyncs with their
//! protection, and the return to consistency.

mod common;

use arepl_core::history::{History, CONSISTENT, RESYNCING};
use arepl_core::wire::{FrameKind, Header};
use common::{assert_image, run, stream, TestServer, VOLUME_SIZE};
use futures_util::{SinkExt, StreamExt};
use replicad::codec::Frame;
use replicad::protection::{ResyncProtection, SnapshotMode};
use replicad::sender::client::{frame_for, BeginMode, Connection, Greeting, Peer};
use replicad::sender::workload::Workload;
use replicad::state::{Consistency, StateStore};

/// Protection by a hook alone (the targets are files).
fn hook(command: &str) -> ResyncProtection {
    ResyncProtection {
        before_resync: Some(command.to_string()),
        snapshot: SnapshotMode::Disabled,
        ..ResyncProtection::default()
    }
}

fn resyncing(peer: &Peer) -> Peer {
    Peer {
        begin: BeginMode::Resync,
        ..peer.clone()
    }
}

/// The replica's history block as its `Welcome` says, from a session opened and
/// closed at once (without a `Begin`).
async fn welcomed(peer: &Peer) -> arepl_core::history::HistoryBlock {
    let mut conn = peer.connect().await.unwrap();
    match peer.handshake_as(&mut conn, &peer.volume).await.unwrap() {
        Greeting::Welcome { history, .. } => history,
        Greeting::Refused(reason) => panic!("refused: {reason}"),
    }
}

/// Reads until the server closes; the highest `Ack` seen.
async fn highest_ack_until_closed(conn: &mut Connection) -> u64 {
    let mut highest = 0;
    while let Some(Ok(frame)) = conn.next().await {
        assert_eq!(frame.header.kind, FrameKind::Ack);
        highest = highest.max(frame.header.seq);
    }
    highest
}

#[test]
fn begin_adopts_a_history_continues_it_and_refuses_another() {
    run(async {
        let server = TestServer::start(VOLUME_SIZE).await;
        let peer = server.peer();
        // A fresh replica: no history, not known consistent.
        assert_eq!(welcomed(&peer).await, Default::default());
        let mut image = vec![0u8; VOLUME_SIZE as usize];
        let first = stream(&peer, 1, 10, &mut image).await;
        let (history, resync) = first.begun.unwrap();
        assert!(!resync);
        assert_eq!(history.counter, 1);
        let state = server.persisted();
        assert_eq!(state.history, Some(history));
        assert_eq!(state.consistency, Consistency::Consistent);
        let block = welcomed(&peer).await;
        assert_eq!((block.history, block.flags), (Some(history), CONSISTENT));

        // The next session continues it.
        let second = stream(&peer, 2, 10, &mut image).await;
        assert_eq!(second.begun, Some((history, false)));

        // A sender naming another history without resyncing is dropped; nothing of it
        // is written.
        let other = Peer {
            begin: BeginMode::Continue(History::new([0x0E; 16])),
            ..peer.clone()
        };
        let (mut conn, durable) = other.open_session().await.unwrap();
        assert_eq!(durable, 20);
        // The server may close before all of it is sent.
        for (seq, op) in (21..).zip(Workload::new(3, 4, VOLUME_SIZE).unwrap()) {
            let _ = conn.feed(frame_for(seq, op)).await;
        }
        let _ = conn.send(Frame::bare(Header::flush(25))).await;
        assert!(highest_ack_until_closed(&mut conn).await <= 20);
        assert_image(&server.target(), &image);
        assert_eq!(server.persisted().history, Some(history));
        let (_dir, state) = server.stop().await;
        assert_eq!(state.durable_seq, 20);
    });
}

#[test]
fn a_resync_refused_by_its_hook_changes_nothing_and_a_later_one_completes() {
    run(async {
        // A consistent replica with a history.
        let server = TestServer::start(VOLUME_SIZE).await;
        let mut image = vec![0u8; VOLUME_SIZE as usize];
        let history = stream(&server.peer(), 4, 12, &mut image)
            .await
            .begun
            .unwrap()
            .0;
        let (dir, before) = server.stop().await;

        let server = TestServer::start_protecting(dir, hook("exit 1")).await;
        let mut refused_image = image.clone();
        let ops = Workload::new(5, 8, VOLUME_SIZE)
            .unwrap()
            .inspect(|op| op.apply_to(&mut refused_image));
        // The server drops the session (the sender sees a close or a reset).
        let refused = resyncing(&server.peer())
            .stream_with(ops, Default::default())
            .await;
        assert!(refused.is_err(), "{refused:?}");
        assert_image(&server.target(), &image);
        assert_eq!(server.persisted(), before);
        let (dir, _) = server.stop().await;

        // With a hook that succeeds the same resync goes through: recorded under the
        // next generation, consistent once its last entry is durable.
        let marker = dir.path().join("protected");
        let command = format!("echo \"$AREPL_HISTORY $AREPL_DURABLE_SEQ\" > {marker:?}");
        let server = TestServer::start_protecting(dir, hook(&command)).await;
        let ops = Workload::new(5, 8, VOLUME_SIZE)
            .unwrap()
            .inspect(|op| op.apply_to(&mut image));
        let report = resyncing(&server.peer())
            .stream_with(ops, Default::default())
            .await
            .unwrap();
        assert_eq!(report.begun, Some((history.next_generation(), true)));
        assert_eq!(report.final_ack, 20);
        assert_eq!(
            std::fs::read_to_string(&marker).unwrap(),
            format!("{history} 12\n")
        );
        assert_image(&server.target(), &image);
        // The commit covering the resync's last entry and the record of consistency are
        // one step apart: wait for the second.
        let mut state = server.persisted();
        for _ in 0..100 {
            if state.consistency == Consistency::Consistent {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            state = server.persisted();
        }
        assert_eq!(state.consistency, Consistency::Consistent);
        assert_eq!(state.history, Some(history.next_generation()));
        assert_eq!(state.protection_snapshot, None);
        server.stop().await;
    });
}

#[test]
fn an_interrupted_resync_stays_inconsistent_and_is_not_protected_again() {
    run(async {
        let server = TestServer::start(VOLUME_SIZE).await;
        let mut image = vec![0u8; VOLUME_SIZE as usize];
        stream(&server.peer(), 6, 5, &mut image).await;
        let (dir, _) = server.stop().await;
        let marker = dir.path().join("hook-runs");
        let server =
            TestServer::start_protecting(dir, hook(&format!("echo run >> {marker:?}"))).await;

        // A resync whose link drops before it is done.
        let peer = resyncing(&server.peer());
        let (mut conn, durable) = peer.open_session().await.unwrap();
        assert_eq!(durable, 5);
        for (seq, op) in (6..).zip(Workload::new(7, 4, VOLUME_SIZE).unwrap()) {
            conn.feed(frame_for(seq, op)).await.unwrap();
        }
        conn.send(Frame::bare(Header::flush(10))).await.unwrap();
        while conn.next().await.unwrap().unwrap().header.seq < 10 {}
        drop(conn);
        let history = server.persisted().history.unwrap();
        assert_eq!(history.counter, 2);
        let block = welcomed(&server.peer()).await;
        assert_eq!((block.history, block.flags), (Some(history), RESYNCING));

        // The sender continuing its own resync keeps it going; the replica stays
        // inconsistent until a ResyncDone is durable.
        let (mut conn, _) = server.peer().open_session().await.unwrap();
        conn.send(Frame::bare(Header::flush(11))).await.unwrap();
        while conn.next().await.unwrap().unwrap().header.seq < 11 {}
        drop(conn);
        assert_eq!(
            server.persisted().consistency,
            Consistency::Resyncing { done_seq: None }
        );

        // A new resync of an inconsistent replica has nothing to protect: no hook.
        let (mut conn, _) = peer.open_session().await.unwrap();
        conn.send(Frame::bare(Header::flush(12))).await.unwrap();
        while conn.next().await.unwrap().unwrap().header.seq < 12 {}
        drop(conn);
        assert_eq!(std::fs::read_to_string(&marker).unwrap(), "run\n");
        let state = server.persisted();
        assert_eq!(state.history, Some(history.next_generation()));
        assert_eq!(state.consistency, Consistency::Resyncing { done_seq: None });
        server.stop().await;
    });
}

#[test]
fn a_resync_clears_a_divergence() {
    run(async {
        let server = TestServer::start(VOLUME_SIZE).await;
        let (mut conn, _, digest) = server.peer().open_session_with_digest().await.unwrap();
        conn.send(frame_for(1, replicad::sender::workload::Op::Flush))
            .await
            .unwrap();
        // A digest no stream of these entries has: diverged.
        let wrong = arepl_core::digest::Digest(digest.0 ^ 0x5A);
        conn.send(Frame::bare(Header::digest(1, Some(wrong))))
            .await
            .unwrap();
        conn.send(Frame::bare(Header::ping())).await.unwrap();
        loop {
            let ack = conn.next().await.unwrap().unwrap().header;
            if ack.diverged_from().is_some() {
                break;
            }
            conn.send(Frame::bare(Header::ping())).await.unwrap();
        }
        drop(conn);
        assert!(server.persisted().diverged.is_some());
        assert_eq!(welcomed(&server.peer()).await.flags, 0);

        let mut image = vec![0u8; VOLUME_SIZE as usize];
        let ops = Workload::new(8, 6, VOLUME_SIZE)
            .unwrap()
            .inspect(|op| op.apply_to(&mut image));
        let (mut conn, durable) = resyncing(&server.peer()).open_session().await.unwrap();
        for (seq, op) in (durable + 1..).zip(ops) {
            conn.feed(frame_for(seq, op)).await.unwrap();
        }
        conn.send(Frame::bare(Header::resync_done(7)))
            .await
            .unwrap();
        // Every Ack of what the resync made durable is clean (a heartbeat before the
        // Begin was carried out may still say diverged).
        loop {
            let ack = conn.next().await.unwrap().unwrap().header;
            if ack.seq > 1 {
                assert_eq!(ack.diverged_from(), None, "{ack:?}");
            }
            if ack.seq == 7 {
                break;
            }
        }
        drop(conn);
        let (_dir, state) = server.stop().await;
        assert_eq!(state.diverged, None);
        assert_eq!(state.consistency, Consistency::Consistent);
    });
}

#[test]
fn a_resync_durable_before_a_restart_is_complete_at_start() {
    run(async {
        let server = TestServer::start(VOLUME_SIZE).await;
        let mut image = vec![0u8; VOLUME_SIZE as usize];
        stream(&server.peer(), 9, 6, &mut image).await;
        let (dir, state) = server.stop().await;
        // As a crash leaves it: ResyncDone recorded for seq 6, the commit through it
        // done, not yet recorded consistent.
        let mut store = StateStore::open(&dir.path().join("state")).unwrap();
        let history = state.history.unwrap().next_generation();
        store
            .persist(replicad::state::ReplicaState {
                history: Some(history),
                consistency: Consistency::Resyncing { done_seq: Some(6) },
                ..state
            })
            .unwrap();
        drop(store);
        let server = TestServer::start_in(dir).await;
        let state = server.persisted();
        assert_eq!(state.consistency, Consistency::Consistent);
        assert_eq!(state.history, Some(history));
        let block = welcomed(&server.peer()).await;
        assert_eq!((block.history, block.flags), (Some(history), CONSISTENT));
        server.stop().await;
    });
}

#[test]
fn a_continued_resync_may_end_at_an_entry_durable_before_its_begin() {
    run(async {
        let server = TestServer::start(VOLUME_SIZE).await;
        let mut image = vec![0u8; VOLUME_SIZE as usize];
        stream(&server.peer(), 6, 3, &mut image).await;
        // A resync whose last copied entry, 6, and a write after it, 7, become durable;
        // the link breaks before the sender says ResyncDone.
        let (mut conn, _) = resyncing(&server.peer()).open_session().await.unwrap();
        for (seq, op) in (4..).zip(Workload::new(7, 4, VOLUME_SIZE).unwrap()) {
            op.apply_to(&mut image);
            conn.feed(frame_for(seq, op)).await.unwrap();
        }
        conn.send(Frame::bare(Header::flush(8))).await.unwrap();
        while conn.next().await.unwrap().unwrap().header.seq < 8 {}
        drop(conn);
        // Reconnected, the sender continues its resync and names entry 6.
        let (mut conn, durable) = server.peer().open_session().await.unwrap();
        assert_eq!(durable, 8);
        conn.send(Frame::bare(Header::resync_done(6)))
            .await
            .unwrap();
        conn.send(Frame::bare(Header::flush(9))).await.unwrap();
        while conn.next().await.unwrap().unwrap().header.seq < 9 {}
        drop(conn);
        let (_dir, state) = server.stop().await;
        assert_eq!(state.consistency, Consistency::Consistent);
        assert_eq!(state.history.unwrap().counter, 2);
    });
}

#[test]
fn a_resync_may_begin_past_the_durable_seq_and_only_a_resync() {
    use arepl_core::history::HistoryBlock;
    run(async {
        let server = TestServer::start(VOLUME_SIZE).await;
        let mut image = vec![0u8; VOLUME_SIZE as usize];
        let history = stream(&server.peer(), 6, 3, &mut image)
            .await
            .begun
            .unwrap()
            .0;
        let unbegun = Peer {
            begin: BeginMode::Skip,
            ..server.peer()
        };
        let begin = |seq, resync: Option<u64>, history: History| {
            let block = HistoryBlock {
                history: Some(history),
                flags: 0,
            }
            .encode();
            Frame::with_payload(Header::begin(seq, resync, &block), block.to_vec())
        };
        // Without a resync, a Begin past the durable seq is a gap: dropped.
        let (mut conn, durable) = unbegun.open_session().await.unwrap();
        assert_eq!(durable, 3);
        conn.send(begin(7, None, history)).await.unwrap();
        assert!(highest_ack_until_closed(&mut conn).await <= 3);
        assert_eq!(server.persisted().durable_seq, 3);

        // A resync from a sender that no longer holds 4..=7: the stream goes on at 8.
        let next = history.next_generation();
        let (mut conn, _) = unbegun.open_session().await.unwrap();
        conn.send(begin(7, Some(VOLUME_SIZE), next)).await.unwrap();
        for (seq, op) in (8..).zip(Workload::new(7, 3, VOLUME_SIZE).unwrap()) {
            op.apply_to(&mut image);
            conn.feed(frame_for(seq, op)).await.unwrap();
        }
        conn.send(Frame::bare(Header::resync_done(10)))
            .await
            .unwrap();
        conn.send(Frame::bare(Header::flush(11))).await.unwrap();
        while conn.next().await.unwrap().unwrap().header.seq < 11 {}
        drop(conn);
        assert_image(&server.target(), &image);
        let (_dir, state) = server.stop().await;
        assert_eq!(state.durable_seq, 11);
        assert_eq!(state.history, Some(next));
        assert_eq!(state.consistency, Consistency::Consistent);
    });
}
