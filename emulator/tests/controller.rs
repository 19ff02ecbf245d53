//! kube-runtime `Controller` reconciling a custom resource while the emulator injects faults:
//! failing writes (500/409/429), dropped watch streams and expired history.

mod common;

use std::sync::Arc;
use std::time::Duration;

use emulator::{FaultKind, FaultRule};
use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use serde_json::json;

#[derive(Debug, thiserror::Error)]
#[error(transparent)]
struct ReconcileError(#[from] kube::Error);

struct Ctx {
    client: kube::Client,
}

/// Marks the widget Ready for its generation and keeps an owned ConfigMap mirroring its size.
async fn reconcile(w: Arc<DynamicObject>, ctx: Arc<Ctx>) -> Result<Action, ReconcileError> {
    let ns = w.namespace().unwrap_or_default();
    let name = w.name_any();
    let ar = common::widget_resource();
    let cms: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &ns);
    let owner = w.controller_owner_ref(&ar).expect("widget has uid");
    let cm = json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": format!("{name}-mirror"), "ownerReferences": [owner]},
        "data": {"size": w.data["spec"]["size"].to_string()},
    });
    cms.patch(
        &format!("{name}-mirror"),
        &PatchParams::apply("widget-controller").force(),
        &Patch::Apply(cm),
    )
    .await?;
    let widgets: Api<DynamicObject> = Api::namespaced_with(ctx.client.clone(), &ns, &ar);
    let generation = w.metadata.generation.unwrap_or_default();
    if w.data["status"]["observedGeneration"].as_i64() != Some(generation) {
        widgets
            .patch_status(
                &name,
                &PatchParams::default(),
                &Patch::Merge(
                    json!({"status": {"phase": "Ready", "observedGeneration": generation}}),
                ),
            )
            .await?;
    }
    Ok(Action::await_change())
}

fn error_policy(_w: Arc<DynamicObject>, _e: &ReconcileError, _ctx: Arc<Ctx>) -> Action {
    Action::requeue(Duration::from_millis(50))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controller_converges_through_faults() {
    let emu = common::start().await;
    common::install_widget_crd(&emu);
    let client = common::client(&emu);
    let ar = common::widget_resource();
    let widgets: Api<DynamicObject> = Api::namespaced_with(client.clone(), "default", &ar);
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");

    let controller = Controller::new_with(widgets.clone(), watcher::Config::default(), ar.clone())
        .owns_with(cms.clone(), (), watcher::Config::default())
        .run(
            reconcile,
            error_policy,
            Arc::new(Ctx {
                client: client.clone(),
            }),
        )
        .for_each(|_| async {});
    let task = tokio::spawn(controller);

    // A third of writes fail, deterministically; Conflicts and 429s too.
    let faults = emu.faults();
    faults.set_seed(7);
    faults.add_rule(
        FaultRule::new(FaultKind::InternalError)
            .probability(0.2)
            .writes_only(),
    );
    faults.add_rule(
        FaultRule::new(FaultKind::Conflict)
            .probability(0.1)
            .writes_only()
            .resource("widgets.example.com"),
    );
    faults.add_rule(
        FaultRule::new(FaultKind::TooManyRequests {
            retry_after_seconds: 0,
        })
        .every_nth(7)
        .writes_only(),
    );

    for i in 0..5 {
        let w: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": format!("w{i}")}, "spec": {"size": i + 1}
        }))
        .unwrap();
        // The test's own writes go in-process: faults only target HTTP clients.
        let mut obj = serde_json::to_value(&w).unwrap();
        obj["metadata"]["namespace"] = json!("default");
        emu.create_or_replace(obj).unwrap();
        if i == 2 {
            faults.drop_watches_now();
            faults.expire_history();
        }
    }
    faults.drop_watches_after(Some(3));

    let all_ready = |want_size: Option<i64>| {
        let (widgets, cms) = (widgets.clone(), cms.clone());
        async move {
            for i in 0..5 {
                let w = widgets.get(&format!("w{i}")).await.ok()?;
                if w.data["status"]["observedGeneration"].as_i64() != w.metadata.generation {
                    return None;
                }
                let cm = cms.get(&format!("w{i}-mirror")).await.ok()?;
                let size = cm.data?.get("size")?.parse::<i64>().ok()?;
                if size != want_size.unwrap_or(i + 1) {
                    return None;
                }
            }
            Some(())
        }
    };
    // Reads can fail too (20% of writes only, but be tolerant): retry via wait_for.
    common::wait_for("all widgets reconciled", Duration::from_secs(30), || {
        all_ready(None)
    })
    .await;

    // A spec change bumps generation; the controller catches up despite history expiry.
    for i in 0..5 {
        let cur = emu
            .core()
            .get(
                &emu.core().lookup("example.com", "v1", "widgets").unwrap(),
                "default",
                &format!("w{i}"),
            )
            .unwrap();
        let mut next = (*cur).clone();
        next["spec"]["size"] = json!(42);
        emu.create_or_replace(next).unwrap();
    }
    faults.expire_history();
    common::wait_for(
        "widgets reconciled after spec change",
        Duration::from_secs(30),
        || all_ready(Some(42)),
    )
    .await;
    assert!(faults.injected() > 0, "faults were injected");

    // Deleting a widget garbage-collects its mirror.
    faults.clear();
    widgets.delete("w0", &Default::default()).await.unwrap();
    common::wait_for("mirror collected", Duration::from_secs(10), || {
        let cms = cms.clone();
        async move { cms.get_opt("w0-mirror").await.ok()?.is_none().then_some(()) }
    })
    .await;
    task.abort();
    emu.shutdown().await;
}
