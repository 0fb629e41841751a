//! Every kind of bad input drops the connection, changes nothing on the target, and leaves
//! the server serving.

mod common;

use arepl_core::wire::{FrameKind, Header};
use common::{run, stream, TestServer, VOLUME_SIZE};
use futures_util::{SinkExt, StreamExt};
use replicad::codec::Frame;
use replicad::sender::client::frame_for;
use replicad::sender::malformed::{self, MalformedKind};
use replicad::sender::workload::Workload;
use tokio::io::AsyncWriteExt;

#[test]
fn every_malformed_kind_is_dropped_without_effect() {
    run(async {
        let server = TestServer::start(VOLUME_SIZE).await;
        let peer = server.peer();
        let mut image = vec![0u8; VOLUME_SIZE as usize];
        // An established volume with data, so "unchanged" means something.
        let mut expected_seq = stream(&peer, 21, 6, &mut image).await.final_ack;

        for (seed, kind) in (100..).zip(MalformedKind::ALL) {
            let before = server.target();
            let outcome = malformed::run(&peer, kind).await.unwrap();
            assert!(outcome.dropped, "{kind:?}: {}", outcome.detail);
            assert!(server.target() == before, "{kind:?} changed the target");

            // Still serving, from the same durable sequence.
            let report = stream(&peer, seed, 2, &mut image).await;
            assert_eq!(report.welcome_seq, expected_seq, "{kind:?}");
            expected_seq = report.final_ack;
        }
        common::assert_image(&server.target(), &image);
        server.stop().await;
    });
}

/// Reads until the server closes; returns the highest Ack seen.
async fn highest_ack_until_closed(conn: &mut replicad::sender::client::Connection) -> u64 {
    let mut highest = 0;
    while let Some(Ok(frame)) = conn.next().await {
        assert_eq!(frame.header.kind, FrameKind::Ack);
        highest = highest.max(frame.header.seq);
    }
    highest
}

#[test]
fn a_second_hello_or_a_receiver_frame_drops_the_session() {
    run(async {
        let server = TestServer::start(VOLUME_SIZE).await;
        let peer = server.peer();
        let block = arepl_core::history::HistoryBlock::default().encode();
        let bad_frames = [
            peer.hello_as(common::VOLUME),
            Frame::bare(Header::ack(1)),
            Frame::with_payload(Header::welcome(0, VOLUME_SIZE, &block), block.to_vec()),
        ];
        for bad in bad_frames {
            let (mut conn, durable) = peer.open_session().await.unwrap();
            conn.send(bad).await.unwrap();
            assert_eq!(highest_ack_until_closed(&mut conn).await, 0);
            assert_eq!(durable, 0);
        }
        assert!(server.target().iter().all(|&b| b == 0));
        server.stop().await;
    });
}

#[test]
fn entries_before_a_bad_frame_apply_and_nothing_of_it_does() {
    run(async {
        let server = TestServer::start(VOLUME_SIZE).await;
        let (mut conn, _) = server.peer().open_session().await.unwrap();
        let mut image = vec![0u8; VOLUME_SIZE as usize];
        for (seq, op) in (1..).zip(Workload::new(4, 3, VOLUME_SIZE).unwrap()) {
            op.apply_to(&mut image);
            conn.feed(frame_for(seq, op)).await.unwrap();
        }
        // Seq 4 overwrites the start of the volume, but its payload is corrupt.
        let payload = vec![0xEEu8; 8192];
        let mut header = Header::write(4, 0, &payload, true);
        header.payload_checksum ^= 1;
        conn.send(Frame::with_payload(header, payload))
            .await
            .unwrap();

        let acked = highest_ack_until_closed(&mut conn).await;
        assert!(acked <= 3, "acknowledged the bad frame: {acked}");
        let (dir, state) = server.stop().await;
        assert_eq!(state.durable_seq, 3, "valid entries not made durable");
        common::assert_image(
            &std::fs::read(dir.path().join("target.img")).unwrap(),
            &image,
        );
    });
}

#[test]
fn a_frame_cut_off_by_the_sender_writes_nothing() {
    run(async {
        let server = TestServer::start(VOLUME_SIZE).await;
        let (mut conn, _) = server.peer().open_session().await.unwrap();
        let payload = vec![0xABu8; 65536];
        let header = Header::write(1, 0, &payload, false);
        let stream = conn.get_mut();
        stream.write_all(&header.encode()).await.unwrap();
        stream.write_all(&payload[..30000]).await.unwrap();
        stream.shutdown().await.unwrap();
        assert_eq!(highest_ack_until_closed(&mut conn).await, 0);
        let (dir, state) = server.stop().await;
        assert_eq!(state.durable_seq, 0);
        let target = std::fs::read(dir.path().join("target.img")).unwrap();
        assert!(target.iter().all(|&b| b == 0));
    });
}
