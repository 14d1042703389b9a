//! The scheduler over a real store in a temporary directory, its clock moved by hand: automatic
//! rotation, deletion at `delete-at`, and what a clock going back or a store that cannot be
//! written do to them.

use super::*;
use crate::kms::Refusal;
use crate::kms::wire::KeyStatus;
use crate::server::create_org;
use crate::server::testing::{T0, TestServer};
use time::OffsetDateTime;

/// One scheduler run of `s` at `at`; its report for the organization, which must have succeeded.
fn run_at(s: &TestServer, at: OffsetDateTime) -> SchedulerReport {
    s.clock.set(at);
    let mut outcomes = run_once(&s.app);
    assert_eq!(outcomes.len(), 1, "one organization");
    let (org, result) = outcomes.remove(0);
    assert_eq!(org, s.org.id);
    result.expect("the run succeeds")
}

fn refusal<T: std::fmt::Debug>(result: Result<T, KmsError>) -> Option<Refusal> {
    result.err().and_then(|e| e.refusal())
}

fn days(n: i64) -> time::Duration {
    time::Duration::days(n)
}

/// The log lines written while `f` runs on this thread.
fn logged<T>(f: impl FnOnce() -> T) -> (T, String) {
    let log = crate::captured_log::CapturedLog::default();
    let value = log.capture(f);
    (value, log.text())
}

#[test]
fn a_key_rotates_when_its_period_has_passed_and_once_per_period() {
    let s = TestServer::new();
    let key = s.create_rotating("k", 90);
    assert!(run_at(&s, T0 + days(90) - time::Duration::seconds(1)).is_empty());
    assert_eq!((s.version(key), s.rotations(key)), (1, vec![]));

    let report = run_at(&s, T0 + days(90));
    assert_eq!(report.rotated, vec![key], "only this key is due");
    assert_eq!(s.version(key), 2);
    assert_eq!(s.rotations(key), vec![(2, T0 + days(90), true)]);
    assert!(
        run_at(&s, T0 + days(90)).is_empty(),
        "a second run at the same time"
    );
    assert!(run_at(&s, T0 + days(179)).is_empty());

    assert_eq!(run_at(&s, T0 + days(180)).rotated, vec![key]);
    assert_eq!(
        s.rotations(key),
        vec![(2, T0 + days(90), true), (3, T0 + days(180), true)]
    );
    let restarted = s.restart();
    let seen = restarted
        .1
        .keyring()
        .get_key(key, s.app.now())
        .expect("on disk");
    assert_eq!(seen.material.version, 3, "the rotations were written");
}

#[test]
fn a_key_scheduled_for_deletion_is_refused_until_delete_at_then_gone() {
    let s = TestServer::new();
    let key = s.create("doomed");
    let delete_at = s
        .change(|ring, now| ring.schedule_deletion(key, Some(7), now))
        .expect("schedules");
    assert_eq!(delete_at, T0 + days(7));

    assert!(run_at(&s, delete_at - time::Duration::seconds(1)).is_empty());
    assert_eq!(
        s.get(key).expect("still there").status,
        KeyStatus::PendingDeletion
    );
    assert_eq!(
        refusal(s.change(|ring, now| ring.rotate_key(key, now))),
        Some(Refusal::KeyPendingDeletion)
    );
    assert_eq!(
        refusal(s.change(|ring, now| ring.enable_key(key, now))),
        Some(Refusal::KeyPendingDeletion)
    );

    let report = run_at(&s, delete_at);
    assert_eq!(report.destroyed, vec![key]);
    assert_eq!(refusal(s.get(key)), Some(Refusal::KeyNotFound));
    assert_eq!(
        refusal(s.change(|ring, now| ring.cancel_deletion(key, now))),
        Some(Refusal::KeyNotFound),
        "too late to cancel"
    );
}

#[test]
fn a_deletion_cancelled_before_delete_at_keeps_the_key_disabled() {
    let s = TestServer::new();
    let key = s.create("kept");
    let sealed = s
        .org
        .keyring()
        .encrypt(key, b"secret", None, T0)
        .expect("encrypts");
    s.change(|ring, now| ring.schedule_deletion(key, Some(7), now))
        .expect("schedules");
    s.clock.set(T0 + days(6));
    s.change(|ring, now| ring.cancel_deletion(key, now))
        .expect("cancels");

    assert!(run_at(&s, T0 + days(30)).is_empty());
    assert_eq!(s.get(key).expect("kept").status, KeyStatus::Disabled);
    s.change(|ring, now| ring.enable_key(key, now))
        .expect("enables");
    let opened = s
        .org
        .keyring()
        .decrypt(key, &sealed, None, s.app.now())
        .expect("decrypts");
    assert_eq!(opened.expose_secret(), b"secret");
}

#[test]
fn a_disabled_key_is_not_rotated_and_catches_up_once_enabled() {
    let s = TestServer::new();
    let disabled = s.create_rotating("disabled", 90);
    let manual = s.create_rotating("manual", 90);
    s.change(|ring, now| ring.disable_key(disabled, now))
        .expect("disables");
    s.change(|ring, now| ring.disable_rotation(manual, now))
        .expect("rotation off");

    assert!(run_at(&s, T0 + days(200)).is_empty());
    assert_eq!((s.version(disabled), s.version(manual)), (1, 1));

    // The keyring's rule: the missed rotation happens at the first run after enabling, once.
    s.change(|ring, now| ring.enable_key(disabled, now))
        .expect("enables");
    assert_eq!(run_at(&s, T0 + days(200)).rotated, vec![disabled]);
    assert_eq!(s.rotations(disabled), vec![(2, T0 + days(200), true)]);
    assert!(run_at(&s, T0 + days(289)).is_empty(), "the period restarts");
}

#[test]
fn a_clock_going_back_neither_undoes_nor_repeats_a_rotation() {
    let s = TestServer::new();
    let key = s.create_rotating("k", 90);
    assert_eq!(run_at(&s, T0 + days(90)).rotated, vec![key]);

    assert!(
        run_at(&s, T0 + days(10)).is_empty(),
        "back before the rotation"
    );
    assert_eq!(s.version(key), 2, "not undone");
    assert!(
        run_at(&s, T0 + days(90)).is_empty(),
        "forward again: not repeated"
    );
    assert!(run_at(&s, T0 + days(100)).is_empty());
    assert_eq!(s.rotations(key), vec![(2, T0 + days(90), true)]);
    assert_eq!(run_at(&s, T0 + days(180)).rotated, vec![key]);
}

#[test]
fn a_destroyed_key_stays_gone_when_the_clock_goes_back_or_the_server_restarts() {
    let s = TestServer::new();
    let key = s.create("doomed");
    s.change(|ring, now| ring.schedule_deletion(key, Some(7), now))
        .expect("schedules");
    assert_eq!(run_at(&s, T0 + days(7)).destroyed, vec![key]);

    assert!(run_at(&s, T0).is_empty(), "back before delete-at");
    assert_eq!(refusal(s.get(key)), Some(Refusal::KeyNotFound));
    let (_app, org) = s.restart();
    assert_eq!(
        refusal(org.keyring().get_key(key, T0)),
        Some(Refusal::KeyNotFound),
        "destroyed on disk too"
    );
}

#[test]
fn a_store_that_cannot_be_written_logs_keeps_its_state_and_catches_up_later() {
    let s = TestServer::new();
    let rotating = s.create_rotating("rotating", 90);
    let doomed = s.create("doomed");
    s.change(|ring, now| ring.schedule_deletion(doomed, Some(7), now))
        .expect("schedules");
    let file = s.org_file();
    let before = std::fs::read(&file).expect("the org file");
    // A directory where the org file goes: the atomic rename onto it fails.
    let aside = file.with_extension("aside");
    std::fs::rename(&file, &aside).expect("moves the file aside");
    std::fs::create_dir(&file).expect("a directory in its place");

    s.clock.set(T0 + days(90));
    let (outcomes, log) = logged(|| run_once(&s.app));
    assert_eq!(outcomes.len(), 1);
    assert!(outcomes[0].1.is_err(), "{:?}", outcomes[0].1);
    let line = log
        .lines()
        .find(|l| l.contains("scheduler:"))
        .unwrap_or_else(|| panic!("no error logged: {log}"));
    assert!(
        line.contains("ERROR") && line.contains(&s.org.id.to_string()),
        "{line}"
    );
    assert_eq!(s.version(rotating), 1, "nothing rotated in memory");
    assert_eq!(
        refusal(s.get(doomed)),
        Some(Refusal::KeyNotFound),
        "past delete-at it is gone to callers anyway"
    );

    std::fs::remove_dir(&file).expect("removes the directory");
    std::fs::rename(&aside, &file).expect("puts the file back");
    assert_eq!(std::fs::read(&file).expect("the org file"), before);
    let report = run_at(&s, T0 + days(90));
    assert_eq!(
        (report.rotated, report.destroyed),
        (vec![rotating], vec![doomed])
    );
    assert_eq!(
        s.rotations(rotating),
        vec![(2, T0 + days(90), true)],
        "once"
    );
}

#[test]
fn one_organization_that_cannot_be_written_does_not_stop_the_others() {
    let s = TestServer::new();
    let key = s.create_rotating("k", 90);
    let other = create_org(s.dir.path(), "other", None).expect("a second organization");
    let (app, _) = s.restart();
    let broken = crate::server::org::org_path(s.dir.path(), other.org);
    std::fs::remove_file(&broken).expect("removes");
    std::fs::create_dir(&broken).expect("a directory in its place");

    s.clock.set(T0 + days(365));
    let outcomes = run_once(&app);
    let succeeded = |id: Uuid| {
        outcomes
            .iter()
            .find(|(org, _)| *org == id)
            .map(|(_, result)| result.is_ok())
    };
    assert_eq!(succeeded(other.org), Some(false), "its default key is due");
    assert_eq!(succeeded(s.org.id), Some(true));
    let healthy = app.store.org(s.org.id).expect("loaded");
    let seen = healthy.keyring().get_key(key, app.now()).expect("found");
    assert_eq!(seen.material.version, 2, "rotated, so written");
}

/// Polls `done` every 10 ms for up to `limit`; whether it came true.
async fn within(limit: std::time::Duration, done: impl Fn() -> bool) -> bool {
    let until = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < until {
        if done() {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    done()
}

#[tokio::test]
async fn a_server_that_does_not_lead_skips_its_turns_and_runs_at_once_when_elected() {
    let s = TestServer::new();
    let key = s.create_rotating("k", 90);
    s.clock.set(T0 + days(91));
    s.app.store.set_leader(false);
    let scheduler = tokio::spawn(run(Arc::clone(&s.app)));
    // Its first turn comes at once, and is skipped: another server leads.
    assert!(
        !within(std::time::Duration::from_millis(300), || s.version(key)
            != 1)
        .await,
        "a server that does not lead rotated the key"
    );
    // Elected long before its next turn (a minute away): the due rotation runs now.
    s.app.store.set_leader(true);
    let rotated = within(std::time::Duration::from_secs(10), || s.version(key) == 2).await;
    scheduler.abort();
    assert!(
        rotated,
        "the new leader did not run the scheduler when elected"
    );
    assert_eq!(s.rotations(key), vec![(2, T0 + days(91), true)]);
}
