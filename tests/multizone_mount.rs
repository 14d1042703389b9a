//! A mount against a replica zone: the cipher directory is initialized against zone B's server
//! with a key replicated from zone A; with zone A's server stopped, a fresh mount against B
//! keeps reading old files and writing new ones.

mod common;

use common::Env;
use common::kms_server::zones::{Zones, wait_until};
use common::kms_server::{get_key, ok, post};
use serde_json::json;
use std::time::Duration;

#[test]
fn a_mount_against_a_replica_zone_works_while_the_primary_is_down() {
    let mut zones = Zones::start(&["ch-gva-2", "de-fra-1"]);
    let clients = zones.org();
    let (a, b) = (&clients[0], &clients[1]);
    let key = a.create_multi_zone_key("volume");
    ok(post(a, &key, "replicate", json!({"zone": "de-fra-1"})));
    assert_eq!(get_key(b, &key)["origin-zone"], "ch-gva-2");

    let mut env = Env::new();
    env.vars
        .push(("EXOSCALE_API_KEY".into(), b.creds.api_key.clone()));
    env.vars
        .push(("EXOSCALE_API_SECRET".into(), b.creds.api_secret.clone()));
    let cipher = env.cipher.clone();
    env.ok(&["init", Env::s(&cipher), "--kms", &b.base, "--key", &key]);
    let mount = env.mount();
    std::fs::write(env.plain.join("before"), b"written with A up").expect("write");
    mount.unmount();

    // The primary rotates, then its zone goes away.
    ok(post(a, &key, "rotate", json!({})));
    wait_until("the rotation to reach B", Duration::from_secs(20), || {
        get_key(b, &key)["material"]["version"] == 2
    });
    zones.servers[0].kill_9();

    let _mount = env.mount();
    assert_eq!(
        std::fs::read(env.plain.join("before")).expect("old file"),
        b"written with A up"
    );
    std::fs::write(env.plain.join("after"), b"written with A down").expect("new file");
    std::fs::write(env.plain.join("before"), b"rewritten").expect("rewrite");
    assert_eq!(
        std::fs::read(env.plain.join("after")).expect("read back"),
        b"written with A down"
    );
    assert_eq!(
        std::fs::read(env.plain.join("before")).expect("read back"),
        b"rewritten"
    );
}
