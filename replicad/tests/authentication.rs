//! Pre-shared-key authentication through an in-process server on 127.0.0.1: who gets
//! in, who does not, and that nothing of a refused peer reaches the target. (Encryption
//! needs the kernel's TLS layer, which the VM suite has: tests/vm/scenarios/9x.)

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use arepl_core::auth::Psk;
use common::{assert_image, fresh_dir, run, stream, TestServer, VOLUME_SIZE};
use replicad::keys::KeyFiles;

const KEY_A: &str = "aa00000000000000000000000000000000000000000000000000000000000001\n";
const KEY_B: &str = "bb00000000000000000000000000000000000000000000000000000000000002\n";

fn key_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

fn psk(text: &str) -> Option<Psk> {
    Some(Psk::parse(text.as_bytes()).unwrap())
}

async fn keyed_server(current: &str, next: Option<&str>) -> TestServer {
    let dir = fresh_dir(VOLUME_SIZE);
    let keys = KeyFiles {
        current: key_file(dir.path(), "current.key", current),
        next: next.map(|text| key_file(dir.path(), "next.key", text)),
    };
    TestServer::start_keyed(dir, keys).await
}

#[test]
fn a_sender_with_the_key_replicates() {
    run(async {
        let server = keyed_server(KEY_A, None).await;
        let mut peer = server.peer();
        peer.key = psk(KEY_A);
        let mut image = vec![0u8; VOLUME_SIZE as usize];
        let report = stream(&peer, 3, 30, &mut image).await;
        assert_eq!(report.final_ack, 30);
        assert_image(&server.target(), &image);
        server.stop().await;
    });
}

#[test]
fn wrong_missing_and_unexpected_keys_are_refused_before_any_write() {
    run(async {
        let server = keyed_server(KEY_A, None).await;
        let mut wrong = server.peer();
        wrong.key = psk(KEY_B);
        let err = format!("{:#}", wrong.open_session().await.unwrap_err());
        assert!(
            err.contains("server refused: sender offered key") && err.contains("(current)"),
            "{err}"
        );
        let keyless = server.peer();
        let err = format!("{:#}", keyless.open_session().await.unwrap_err());
        assert!(err.contains("requires one (--key-file)"), "{err}");
        assert_image(&server.target(), &vec![0u8; VOLUME_SIZE as usize]);
        assert_eq!(server.persisted().identity, None);
        server.stop().await;

        let open = TestServer::start(VOLUME_SIZE).await;
        let mut keyed = open.peer();
        keyed.key = psk(KEY_A);
        let err = format!("{:#}", keyed.open_session().await.unwrap_err());
        assert!(err.contains("has none configured"), "{err}");
        open.stop().await;
    });
}

#[test]
fn a_replayed_authentication_is_refused() {
    run(async {
        let server = keyed_server(KEY_A, None).await;
        let mut peer = server.peer();
        peer.key = psk(KEY_A);
        let (conn, recording) = peer.connect_recorded().await.unwrap();
        drop(conn);
        let answer = peer.replay(&recording.unwrap()).await.unwrap();
        assert!(answer.is_none(), "a replay was answered: {answer:?}");
        // The genuine sender still gets in afterwards.
        let mut image = vec![0u8; VOLUME_SIZE as usize];
        stream(&peer, 4, 5, &mut image).await;
        assert_image(&server.target(), &image);
        server.stop().await;
    });
}

#[test]
fn during_a_rollover_both_keys_work() {
    run(async {
        let server = keyed_server(KEY_A, Some(KEY_B)).await;
        let mut image = vec![0u8; VOLUME_SIZE as usize];
        let mut old = server.peer();
        old.key = psk(KEY_A);
        let first = stream(&old, 5, 10, &mut image).await;
        let mut new = server.peer();
        new.key = psk(KEY_B);
        new.oldest_seq = first.final_ack + 1;
        let second = stream(&new, 6, 10, &mut image).await;
        assert_eq!(second.welcome_seq, first.final_ack);
        assert_image(&server.target(), &image);
        server.stop().await;
    });
}
