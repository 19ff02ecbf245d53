//! Watches through kube-rs: raw event streams, resume, 410 Gone with the `watcher` re-listing,
//! streaming lists with the initial-events-end bookmark, selectors, dropped streams.

mod common;

use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use serde_json::json;

fn cm(name: &str, labels: serde_json::Value) -> ConfigMap {
    serde_json::from_value(
        json!({"metadata": {"name": name, "labels": labels}, "data": {"v": "0"}}),
    )
    .unwrap()
}

async fn next_event(
    stream: &mut (impl futures::Stream<Item = kube::Result<WatchEvent<ConfigMap>>> + Unpin),
) -> WatchEvent<ConfigMap> {
    tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("event within 10s")
        .expect("stream open")
        .expect("event decodes")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_watch_resume_bookmarks_and_gone() {
    let emu = common::start().await;
    let cms: Api<ConfigMap> = Api::namespaced(common::client(&emu), "default");
    let a = cms
        .create(&PostParams::default(), &cm("a", json!({})))
        .await
        .unwrap();
    let rv_a = a.metadata.resource_version.clone().unwrap();
    cms.patch(
        "a",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"v": "1"}})),
    )
    .await
    .unwrap();
    cms.create(&PostParams::default(), &cm("b", json!({})))
        .await
        .unwrap();

    // Resume after the create of `a`: the modification and `b` follow, then bookmarks.
    let mut stream = cms
        .watch(&WatchParams::default(), &rv_a)
        .await
        .unwrap()
        .boxed();
    match next_event(&mut stream).await {
        WatchEvent::Modified(o) => assert_eq!(o.data.unwrap()["v"], "1"),
        other => panic!("expected MODIFIED, got {other:?}"),
    }
    match next_event(&mut stream).await {
        WatchEvent::Added(o) => assert_eq!(o.metadata.name.as_deref(), Some("b")),
        other => panic!("expected ADDED, got {other:?}"),
    }
    cms.delete("a", &Default::default()).await.unwrap();
    assert!(matches!(
        next_event(&mut stream).await,
        WatchEvent::Deleted(_)
    ));
    loop {
        if let WatchEvent::Bookmark(bm) = next_event(&mut stream).await {
            assert!(!bm.metadata.resource_version.is_empty());
            break;
        }
    }

    // RV "0": synthetic ADDED for the current state.
    let mut from_zero = cms
        .watch(&WatchParams::default(), "0")
        .await
        .unwrap()
        .boxed();
    match next_event(&mut from_zero).await {
        WatchEvent::Added(o) => assert_eq!(o.metadata.name.as_deref(), Some("b")),
        other => panic!("expected ADDED, got {other:?}"),
    }

    // Once history is gone, resuming from the old RV is an ERROR event with 410 Expired.
    emu.faults().expire_history();
    let mut expired = cms
        .watch(&WatchParams::default(), &rv_a)
        .await
        .unwrap()
        .boxed();
    match next_event(&mut expired).await {
        WatchEvent::Error(e) => {
            assert_eq!(e.code, 410);
            assert_eq!(e.reason, "Expired");
        }
        other => panic!("expected ERROR 410, got {other:?}"),
    }
    // And the open watch was ended by the fault.
    let ended = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(ev) = stream.next().await {
            ev.unwrap();
        }
    })
    .await;
    assert!(
        ended.is_ok(),
        "watch stream should end after expire_history"
    );
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn selector_watch_turns_leaving_objects_into_deleted() {
    let emu = common::start().await;
    let cms: Api<ConfigMap> = Api::namespaced(common::client(&emu), "default");
    cms.create(&PostParams::default(), &cm("x", json!({"team": "a"})))
        .await
        .unwrap();
    let mut stream = cms
        .watch(&WatchParams::default().labels("team=a"), "0")
        .await
        .unwrap()
        .boxed();
    assert!(matches!(
        next_event(&mut stream).await,
        WatchEvent::Added(_)
    ));
    cms.patch(
        "x",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"team": "b"}}})),
    )
    .await
    .unwrap();
    match next_event(&mut stream).await {
        WatchEvent::Deleted(o) => assert_eq!(o.metadata.labels.unwrap()["team"], "b"),
        other => panic!("expected DELETED, got {other:?}"),
    }
    cms.patch(
        "x",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"team": "a"}}})),
    )
    .await
    .unwrap();
    assert!(matches!(
        next_event(&mut stream).await,
        WatchEvent::Added(_)
    ));
    emu.shutdown().await;
}

/// A reflector fed by kube's `watcher` converges on the server state through dropped watches
/// and expired history (it re-lists after 410).
async fn reflector_survives_faults(config: watcher::Config) {
    let emu = common::start().await;
    let cms: Api<ConfigMap> = Api::namespaced(common::client(&emu), "default");
    let (reader, writer) = reflector::store();
    let stream =
        reflector(writer, watcher(cms.clone(), config).default_backoff()).touched_objects();
    let task = tokio::spawn(async move {
        let mut s = std::pin::pin!(stream);
        // Errors (410, dropped streams) are reported and the watcher recovers by itself.
        while s.next().await.is_some() {}
    });
    let names = |r: reflector::Store<ConfigMap>| {
        let mut n: Vec<String> = r
            .state()
            .iter()
            .filter_map(|c| c.metadata.name.clone())
            .collect();
        n.sort();
        n
    };

    for i in 0..3 {
        cms.create(&PostParams::default(), &cm(&format!("c{i}"), json!({})))
            .await
            .unwrap();
    }
    common::wait_for("3 objects cached", Duration::from_secs(10), || {
        let r = reader.clone();
        async move { (names(r).len() == 3).then_some(()) }
    })
    .await;

    // Drop the watch and expire the history, change things meanwhile: the watcher's resume
    // gets 410 and it must re-list to see the deletion and the new object.
    emu.faults().expire_history();
    cms.delete("c0", &Default::default()).await.unwrap();
    cms.create(&PostParams::default(), &cm("c9", json!({})))
        .await
        .unwrap();
    emu.faults().expire_history();
    common::wait_for("cache converged after 410", Duration::from_secs(15), || {
        let r = reader.clone();
        async move { (names(r) == ["c1", "c2", "c9"]).then_some(()) }
    })
    .await;

    // Streams dropped after every 2 events still converge.
    emu.faults().drop_watches_after(Some(2));
    for i in 10..16 {
        cms.create(&PostParams::default(), &cm(&format!("c{i}"), json!({})))
            .await
            .unwrap();
    }
    common::wait_for(
        "cache converged with dropping watches",
        Duration::from_secs(15),
        || {
            let r = reader.clone();
            async move { (names(r).len() == 9).then_some(()) }
        },
    )
    .await;
    let lists = emu
        .request_log()
        .entries()
        .iter()
        .filter(|r| {
            r.verb == "list" || (r.verb == "watch" && r.query.contains("sendInitialEvents=true"))
        })
        .count();
    assert!(
        lists >= 2,
        "the watcher should have re-listed after 410, saw {lists} lists"
    );
    task.abort();
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watcher_relists_after_gone() {
    reflector_survives_faults(watcher::Config::default()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streaming_list_watcher_relists_after_gone() {
    reflector_survives_faults(watcher::Config::default().streaming_lists()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_resource_version_semantics() {
    let emu = common::start().await;
    let cms: Api<ConfigMap> = Api::namespaced(common::client(&emu), "default");
    let a = cms
        .create(&PostParams::default(), &cm("a", json!({})))
        .await
        .unwrap();
    let list = cms.list(&ListParams::default().match_any()).await.unwrap();
    let list_rv: u64 = list.metadata.resource_version.unwrap().parse().unwrap();
    let a_rv: u64 = a.metadata.resource_version.unwrap().parse().unwrap();
    assert!(list_rv >= a_rv);
    // NotOlderThan an RV we handed out: served.
    let again = cms
        .list(&ListParams::default().at(&a_rv.to_string()))
        .await
        .unwrap();
    assert_eq!(again.items.len(), 1);
    // Exact at an RV whose history is gone: 410 Expired.
    cms.create(&PostParams::default(), &cm("b", json!({})))
        .await
        .unwrap();
    emu.faults().expire_history();
    let exact = ListParams {
        resource_version: Some(a_rv.to_string()),
        version_match: Some(kube::api::VersionMatch::Exact),
        ..Default::default()
    };
    let err = common::api_err(cms.list(&exact).await.unwrap_err());
    assert_eq!((err.code, err.reason.as_str()), (410, "Expired"));
    emu.shutdown().await;
}
