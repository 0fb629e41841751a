//! Every kind of bad input drops the connection, changes nothing on the target, and leaves
//! the server serving.

mod common;

use common::{run, stream, TestServer, VOLUME_SIZE};
use replicad::sender::malformed::{self, MalformedKind};

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
