//! End-to-end replication through an in-process server on 127.0.0.1.

mod common;

use common::{assert_image, run, stream, TestServer, VOLUME_SIZE};
use std::ops::RangeInclusive;

use arepl_core::history::HistoryBlock;
use arepl_core::wire::{FrameKind, Header};
use futures_util::{SinkExt, StreamExt};
use replicad::codec::Frame;
use replicad::replica::Replica;
use replicad::sender::client::{frame_for, Connection, Greeting, StreamOptions};
use replicad::sender::workload::{Op, Workload};
use replicad::sequencer::{Admitted, Sequencer};

#[test]
fn a_valid_stream_leaves_the_target_equal_to_the_expected_image() {
    run(async {
        let server = TestServer::start(VOLUME_SIZE).await;
        let mut image = vec![0u8; VOLUME_SIZE as usize];
        let report = stream(&server.peer(), 11, 40, &mut image).await;
        assert_eq!(report.welcome_seq, 0);
        assert_eq!(report.last_seq, 40);
        assert_eq!(report.final_ack, 40);
        assert_image(&server.target(), &image);
        let (_dir, state) = server.stop().await;
        assert_eq!(state.durable_seq, 40);
    });
}

#[test]
fn a_restarted_server_resumes_from_the_persisted_durable_seq() {
    run(async {
        let server = TestServer::start(VOLUME_SIZE).await;
        let mut image = vec![0u8; VOLUME_SIZE as usize];
        let first = stream(&server.peer(), 1, 20, &mut image).await;
        let (dir, state) = server.stop().await;
        assert_eq!(state.durable_seq, first.final_ack);

        let server = TestServer::start_in(dir).await;
        let mut peer = server.peer();
        peer.oldest_seq = first.final_ack + 1;
        let second = stream(&peer, 2, 20, &mut image).await;
        assert_eq!(second.welcome_seq, first.final_ack);
        assert_eq!(second.final_ack, first.final_ack + 20);
        assert_image(&server.target(), &image);
        let snapshot = replicad::state::inspect(&server.dir.path().join("state"))
            .unwrap()
            .unwrap();
        assert_eq!(snapshot.state.durable_seq, 40);
    });
}

#[test]
fn identity_mismatches_and_sequence_gaps_are_refused() {
    run(async {
        let server = TestServer::start(2 * VOLUME_SIZE).await;
        let mut image = vec![0u8; VOLUME_SIZE as usize];
        stream(&server.peer(), 5, 5, &mut image).await;

        let peer = server.peer();
        let mut conn = peer.connect().await.unwrap();
        let Greeting::Refused(reason) = peer.handshake_as(&mut conn, "othervol").await.unwrap()
        else {
            panic!("a different volume name was welcomed");
        };
        assert!(reason.starts_with("volume mismatch"), "{reason}");
        assert!(conn.next().await.is_none(), "connection left open");

        let mut bigger = server.peer();
        bigger.volume_size = 2 * VOLUME_SIZE;
        let err = bigger.open_session().await.unwrap_err().to_string();
        assert!(err.contains("volume mismatch"), "{err}");

        let mut ahead = server.peer();
        ahead.oldest_seq = 9;
        let err = ahead.open_session().await.unwrap_err().to_string();
        assert!(
            err.ends_with("sequence gap: receiver durable at 5, sender's oldest held entry is 9"),
            "{err}"
        );
        // The durable entry's successor is fine.
        ahead.oldest_seq = 6;
        let (conn, durable) = ahead.open_session().await.unwrap();
        assert_eq!(durable, 5);
        drop(conn);
        assert_image(&server.target()[..VOLUME_SIZE as usize], &image);
        server.stop().await;
    });
}

#[test]
fn first_contact_is_refused_when_the_volume_does_not_fit_the_target() {
    run(async {
        let server = TestServer::start(VOLUME_SIZE / 2).await;
        let err = server.peer().open_session().await.unwrap_err().to_string();
        assert!(err.contains("does not fit"), "{err}");
        let (_dir, state) = server.stop().await;
        assert_eq!(state.identity, None, "a refused volume was recorded");
    });
}

#[test]
fn a_new_session_takes_over_from_the_active_one() {
    run(async {
        let server = TestServer::start(VOLUME_SIZE).await;
        let peer = server.peer();
        let (mut old, durable) = peer.open_session().await.unwrap();
        let mut ops = Workload::new(3, 3, VOLUME_SIZE).unwrap();
        let mut image = vec![0u8; VOLUME_SIZE as usize];
        for seq in durable + 1..=durable + 3 {
            let op = ops.next().unwrap();
            op.apply_to(&mut image);
            old.send(frame_for(seq, op)).await.unwrap();
        }

        // The sender "reconnects": the new session is welcomed and the old one closed.
        let (mut new, resumed) = peer.open_session().await.unwrap();
        loop {
            match old.next().await {
                None | Some(Err(_)) => break,
                Some(Ok(frame)) => assert_eq!(frame.header.kind, arepl_core::wire::FrameKind::Ack),
            }
        }
        // Whatever the old session made durable is where the new one resumes; the sender
        // resends the rest.
        assert!(resumed <= 3);
        let mut resend = Workload::new(3, 3, VOLUME_SIZE)
            .unwrap()
            .skip(resumed as usize);
        for seq in resumed + 1..=3 {
            new.send(frame_for(seq, resend.next().unwrap()))
                .await
                .unwrap();
        }
        new.send(frame_for(4, replicad::sender::workload::Op::Flush))
            .await
            .unwrap();
        loop {
            let frame = new.next().await.unwrap().unwrap();
            if frame.header.seq == 4 {
                break;
            }
        }
        assert_image(&server.target(), &image);
        drop(new);
        let (_dir, state) = server.stop().await;
        assert_eq!(state.durable_seq, 4);
    });
}

#[test]
fn shutdown_makes_applied_entries_durable_and_closes_sessions() {
    run(async {
        let server = TestServer::start(VOLUME_SIZE).await;
        let (mut conn, _) = server.peer().open_session().await.unwrap();
        let mut image = vec![0u8; VOLUME_SIZE as usize];
        for (seq, op) in (1..).zip(Workload::new(9, 5, VOLUME_SIZE).unwrap()) {
            op.apply_to(&mut image);
            conn.send(frame_for(seq, op)).await.unwrap();
        }
        // Wait for the last Ack so the entries are known to be applied, then stop.
        while conn.next().await.unwrap().unwrap().header.seq < 5 {}
        let target = server.target_path();
        let (dir, state) = server.stop().await;
        assert!(
            conn.next().await.is_none(),
            "session not closed by shutdown"
        );
        assert_eq!(state.durable_seq, 5);
        assert_image(&std::fs::read(target).unwrap(), &image);
        drop(dir);
    });
}

/// Sends entries `seqs` of `ops` (entry `seq` is `ops[seq - 1]`) without waiting for acks.
async fn send_entries(conn: &mut Connection, ops: &[Op], seqs: RangeInclusive<u64>) {
    for seq in seqs {
        conn.feed(frame_for(seq, ops[seq as usize - 1].clone()))
            .await
            .unwrap();
    }
    conn.flush().await.unwrap();
}

/// Reads acks until one covers `seq`; acks never go backwards nor past `seq`.
async fn wait_for_ack(conn: &mut Connection, seq: u64) {
    let mut last = 0;
    while last < seq {
        let frame = conn.next().await.expect("server closed").unwrap();
        assert_eq!(frame.header.kind, FrameKind::Ack);
        assert!(frame.header.seq >= last, "Ack went back");
        assert!(
            frame.header.seq <= seq,
            "Ack {} past {seq}",
            frame.header.seq
        );
        last = frame.header.seq;
    }
}

/// The image after applying `ops[range]` in turn, for each range.
fn image_of<'a>(
    ops: &[Op],
    ranges: impl IntoIterator<Item = &'a [RangeInclusive<u64>]>,
) -> Vec<u8> {
    let mut image = vec![0u8; VOLUME_SIZE as usize];
    for range in ranges.into_iter().flatten() {
        for seq in range.clone() {
            ops[seq as usize - 1].apply_to(&mut image);
        }
    }
    image
}

#[test]
fn a_reconnecting_sender_resends_applied_entries_and_they_are_skipped() {
    run(async {
        let server = TestServer::start(VOLUME_SIZE).await;
        let peer = server.peer();
        let ops: Vec<Op> = Workload::new(31, 60, VOLUME_SIZE).unwrap().collect();
        let after = |last: u64| image_of(&ops, [&[1..=last][..]]);

        // First link: 1..=20 acknowledged, 21..=40 in flight when it fails over.
        let (mut first, durable) = peer.open_session().await.unwrap();
        assert_eq!(durable, 0);
        send_entries(&mut first, &ops, 1..=20).await;
        wait_for_ack(&mut first, 20).await;
        send_entries(&mut first, &ops, 21..=40).await;

        // Second link takes over. Its Welcome covers all the old session applied, and
        // nothing past the welcomed sequence is on the target.
        let (mut second, welcomed) = peer.open_session().await.unwrap();
        assert!((20..=40).contains(&welcomed), "welcomed at {welcomed}");
        assert_image(&server.target(), &after(welcomed));
        let state = replicad::state::inspect(&server.dir.path().join("state"))
            .unwrap()
            .unwrap();
        assert_eq!(state.state.durable_seq, welcomed);
        while let Some(Ok(frame)) = first.next().await {
            assert_eq!(frame.header.kind, FrameKind::Ack);
            assert!(frame.header.seq <= welcomed);
        }

        // A sender that resends its whole log: 1..=welcomed are skipped.
        send_entries(&mut second, &ops, 1..=50).await;
        wait_for_ack(&mut second, 50).await;
        assert_image(&server.target(), &after(50));
        drop(second);

        // Reconnecting again and resending only an old prefix before going on: had the
        // prefix been applied again, it would undo later writes it overlaps.
        let (mut third, welcomed) = peer.open_session().await.unwrap();
        assert_eq!(welcomed, 50);
        let reapplied = image_of(&ops, [&[1..=50, 1..=10, 51..=60][..]]);
        assert!(
            reapplied != after(60),
            "the stream needs overlapping writes"
        );
        send_entries(&mut third, &ops, 1..=10).await;
        send_entries(&mut third, &ops, 51..=60).await;
        wait_for_ack(&mut third, 60).await;
        assert_image(&server.target(), &after(60));

        // A gap still drops the session; nothing of it is applied.
        let gap = Op::Write {
            offset: 0,
            data: vec![0xEE; 4096].into(),
            fua: true,
        };
        third.send(frame_for(62, gap)).await.unwrap();
        while let Some(Ok(frame)) = third.next().await {
            assert!(frame.header.seq <= 60, "acknowledged the gap");
        }
        let (dir, state) = server.stop().await;
        assert_eq!(state.durable_seq, 60);
        assert_image(
            &std::fs::read(dir.path().join("target.img")).unwrap(),
            &after(60),
        );
    });
}

#[test]
fn entries_applied_before_a_kill_are_durable_after_the_restart_and_not_sent_again() {
    run(async {
        let server = TestServer::start(VOLUME_SIZE).await;
        let ops: Vec<Op> = Workload::new(31, 50, VOLUME_SIZE).unwrap().collect();
        let after = |last: u64| image_of(&ops, [&[1..=last][..]]);
        let (mut conn, _) = server.peer().open_session().await.unwrap();
        send_entries(&mut conn, &ops, 1..=20).await;
        wait_for_ack(&mut conn, 20).await;
        drop(conn);
        let target = server.target_path();
        let (dir, _) = server.stop().await;

        // What `kill -9` leaves behind: 21..=40 applied after the last commit, at 20.
        let mut replica = Replica::open(&target, &dir.path().join("state")).unwrap();
        let mut sequencer = Sequencer::new(20, VOLUME_SIZE);
        let block = HistoryBlock {
            history: replica.state().history,
            flags: 0,
        }
        .encode();
        let begin = Frame::with_payload(Header::begin(20, None, &block), block.to_vec());
        assert!(matches!(sequencer.admit(begin), Ok(Admitted::Begin(_))));
        for seq in 21..=40 {
            let frame = frame_for(seq, ops[seq as usize - 1].clone());
            let Ok(Admitted::Apply(entry)) = sequencer.admit(frame) else {
                panic!("entry {seq} not admitted");
            };
            replica.apply(&entry).unwrap();
        }
        assert_eq!(replica.state().durable_seq, 20);
        drop(replica);

        // The restart makes them durable: the sender is welcomed after 40 and resends
        // none of them, so the target never goes back to an older state, and whatever
        // the sender sends next (its own 41, or a new history's first entry) is applied.
        let server = TestServer::start_in(dir).await;
        let (mut conn, welcomed) = server.peer().open_session().await.unwrap();
        assert_eq!(welcomed, 40);
        assert_image(&server.target(), &after(40));
        send_entries(&mut conn, &ops, 41..=50).await;
        wait_for_ack(&mut conn, 50).await;
        assert_image(&server.target(), &after(50));
        drop(conn);
        let (_dir, state) = server.stop().await;
        assert_eq!(state.durable_seq, 50);
    });
}

#[test]
fn rerunning_a_stream_from_seq_1_completes_it_with_pings_in_between() {
    run(async {
        let server = TestServer::start(VOLUME_SIZE).await;
        let mut partial = vec![0u8; VOLUME_SIZE as usize];
        let first = stream(&server.peer(), 7, 20, &mut partial).await;
        assert_eq!(first.final_ack, 20);

        // The same seed, longer: its first 20 entries are the ones already applied.
        let mut image = vec![0u8; VOLUME_SIZE as usize];
        let ops = Workload::new(7, 45, VOLUME_SIZE)
            .unwrap()
            .inspect(|op| op.apply_to(&mut image));
        let options = StreamOptions {
            first_seq: Some(1),
            ping_every: Some(4),
            digest_every: Some(5),
        };
        let report = server.peer().stream_with(ops, options).await.unwrap();
        assert_eq!(report.welcome_seq, 20);
        assert_eq!((report.sent, report.resent), (45, 20));
        assert_eq!((report.last_seq, report.final_ack), (45, 45));
        assert_eq!(report.pings, 11);
        assert_image(&server.target(), &image);
        let (_dir, state) = server.stop().await;
        assert_eq!(state.durable_seq, 45);
    });
}

#[test]
fn a_digest_that_differs_is_flagged_on_every_ack_persisted_and_counted() {
    use arepl_core::digest::Digest;

    run(async {
        let server = TestServer::start(VOLUME_SIZE).await;
        let (mut conn, welcomed, digest) = server.peer().open_session_with_digest().await.unwrap();
        assert_eq!(welcomed, 0);
        let ops: Vec<Op> = Workload::new(3, 6, VOLUME_SIZE).unwrap().collect();
        let mut expected = digest;
        for (seq, op) in (1..).zip(ops) {
            let frame = frame_for(seq, op);
            expected = expected.with(&frame.header.entry_fields().unwrap());
            conn.send(frame).await.unwrap();
            if seq == 3 {
                // The sender's own digest through 3: matches, acks stay clean.
                conn.send(Frame::bare(Header::digest(3, Some(expected))))
                    .await
                    .unwrap();
                let ack = ack_through(&mut conn, 3).await;
                assert_eq!(ack.diverged_from(), None);
            }
        }
        // A digest that says one of 4..=6 was something else: the replica diverged. A
        // ping after the check is answered with the flag.
        let wrong = Digest(expected.0 ^ 1);
        conn.send(Frame::bare(Header::digest(6, Some(wrong))))
            .await
            .unwrap();
        let mut flagged = None;
        for _ in 0..50 {
            conn.send(Frame::bare(Header::ping())).await.unwrap();
            flagged = ack_through(&mut conn, 6).await.diverged_from();
            if flagged.is_some() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        assert_eq!(flagged, Some(4));
        drop(conn);
        let (dir, state) = server.stop().await;
        let diverged = state.diverged.expect("divergence persisted");
        assert_eq!((diverged.from_seq, diverged.found_at), (4, 6));
        // A restarted server still says so, from the first Ack on.
        let server = TestServer::start_in(dir).await;
        let (mut conn, _) = server.peer().open_session().await.unwrap();
        conn.send(Frame::bare(Header::ping())).await.unwrap();
        assert_eq!(ack_through(&mut conn, 6).await.diverged_from(), Some(4));
        drop(conn);
        server.stop().await;
    });

    /// Reads acks until one covers `seq`.
    async fn ack_through(conn: &mut Connection, seq: u64) -> Header {
        loop {
            let frame = tokio::time::timeout(std::time::Duration::from_secs(20), conn.next())
                .await
                .expect("no Ack")
                .expect("connection closed")
                .unwrap();
            assert_eq!(frame.header.kind, FrameKind::Ack);
            if frame.header.seq >= seq {
                return frame.header;
            }
        }
    }
}

#[test]
fn verify_checks_in_a_stream_report_only_the_chunks_that_differ() {
    run(async {
        let server = TestServer::start(VOLUME_SIZE).await;
        let peer = server.peer();
        let mut image = vec![0u8; VOLUME_SIZE as usize];
        stream(&peer, 5, 30, &mut image).await;
        // A chunk of the replica changes behind replicad's back.
        {
            use std::os::unix::fs::FileExt;
            let target = std::fs::OpenOptions::new()
                .write(true)
                .open(server.target_path())
                .unwrap();
            target.write_all_at(&[0x5A; 512], (1 << 20) + 4096).unwrap();
        }
        let chunk = 256 << 10;
        let verifies = (0..VOLUME_SIZE / chunk).map(|n| {
            let at = (n * chunk) as usize;
            Op::Verify {
                offset: n * chunk,
                check: arepl_core::verify::ChunkCheck::of(&image[at..at + chunk as usize]),
            }
        });
        let report = peer.stream(verifies).await.unwrap();
        assert_eq!(report.verifies, VOLUME_SIZE / chunk);
        assert_eq!(report.final_ack, report.last_seq);
        let differing: Vec<_> = report
            .mismatches
            .iter()
            .map(|m| (m.offset, m.len))
            .collect();
        assert_eq!(differing, [(1 << 20, chunk as u32)]);
        // The checks wrote nothing.
        let mut changed = image.clone();
        changed[(1 << 20) + 4096..(1 << 20) + 4608].fill(0x5A);
        assert_image(&server.target(), &changed);
        let (dir, state) = server.stop().await;
        assert_eq!(state.durable_seq, report.last_seq);
        let record = replicad::verify::load(&dir.path().join("state"))
            .unwrap()
            .unwrap();
        assert_eq!(
            (record.chunks, record.mismatches, record.last_seq),
            (VOLUME_SIZE / chunk, 1, report.last_seq)
        );
    });
}
