//! End-to-end replication through an in-process server on 127.0.0.1.

mod common;

use common::{assert_image, run, stream, TestServer, VOLUME_SIZE};
use futures_util::{SinkExt, StreamExt};
use replicad::sender::client::{frame_for, Greeting};
use replicad::sender::workload::Workload;

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
