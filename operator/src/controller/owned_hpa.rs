//! The HPA ebb owns for each ScaledObject: applied server-side only when ebb asks for a
//! different one or the stored one moved, deleted while the object is paused, and its
//! ScalingActive condition mirrored into the object's HPAActive.

use std::sync::Arc;

use ebb_crds::ScaledObject;
use ebb_crds::condition::CONDITION_HPA_ACTIVE;
use ebb_scalers::MetricSpec;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::runtime::reflector::ObjectRef;
use tracing::{info, warn};

use crate::digest;
use crate::hpa::{PausedDirections, desired_hpa, hpa_active, hpa_name};
use crate::scale::composite::{Composite, hpa_metrics};
use crate::scale::task::short;

use super::context::{AppliedHpa, Context, lock};
use super::{Error, FIELD_MANAGER};

/// Applies the HPA for `specs` server-side (unless it is stored as ebb left it) and mirrors
/// its ScalingActive condition into HPAActive.
pub(super) async fn apply(
    ctx: &Context,
    key: &str,
    so: &ScaledObject,
    specs: &[MetricSpec],
    composite: Option<&Composite>,
    paused: PausedDirections,
) -> Result<(), Error> {
    let desired = match desired_hpa(so, &hpa_metrics(specs, composite), paused) {
        Ok(h) => h,
        // Checked before the loop started; a late spec (an external plugin's) that cannot be
        // written leaves the HPA as it was.
        Err(e) => {
            warn!(scaledobject = %key, error = %e, "the HPA cannot take the scalers' metrics");
            return Ok(());
        }
    };
    let namespace = so.namespace().unwrap_or_default();
    let wanted = digest::of_json(&desired);
    let seen = lock(&ctx.hpas)
        .as_ref()
        .and_then(|store| store.get(&ObjectRef::new(&hpa_name(so)).within(&namespace)));
    let last = lock(&ctx.applied).get(key).copied();
    let current = match seen {
        // As ebb left it, and ebb still wants the same: nothing to do. (HPAs have no
        // metadata.generation, and their resourceVersion moves with every status update.)
        Some(hpa) if last.is_some_and(|l| l.asked == wanted && l.stored == stored_digest(&hpa)) => {
            hpa
        }
        _ => {
            let hpas: Api<HorizontalPodAutoscaler> =
                Api::namespaced(ctx.client.clone(), &namespace);
            let applied = hpas
                .patch(
                    &hpa_name(so),
                    &PatchParams::apply(FIELD_MANAGER).force(),
                    &Patch::Apply(&desired),
                )
                .await?;
            ctx.metrics.count_write("hpa");
            lock(&ctx.applied).insert(
                key.to_string(),
                AppliedHpa {
                    asked: wanted,
                    stored: stored_digest(&applied),
                },
            );
            Arc::new(applied)
        }
    };
    let (status, reason, message) = hpa_active(&current);
    ctx.status_of(key, so)
        .set(&[(CONDITION_HPA_ACTIVE, status, &reason, short(&message))])
        .await;
    Ok(())
}

/// Deletes the HPA the object had under another name (`horizontalPodAutoscalerConfig.name`
/// changed), so that two HPAs never scale one workload. Only an HPA this object owns is
/// deleted; one already gone is fine, any other failure is retried.
pub(super) async fn delete_renamed(ctx: &Context, so: &ScaledObject) -> Result<(), Error> {
    let Some(old) = so
        .status
        .as_ref()
        .and_then(|s| s.hpa_name.as_deref())
        .filter(|old| !old.is_empty() && *old != hpa_name(so))
    else {
        return Ok(());
    };
    let hpas: Api<HorizontalPodAutoscaler> =
        Api::namespaced(ctx.client.clone(), &so.namespace().unwrap_or_default());
    let Some(hpa) = hpas.get_opt(old).await? else {
        return Ok(());
    };
    let uid = so.uid();
    let owned = hpa
        .owner_references()
        .iter()
        .any(|o| Some(&o.uid) == uid.as_ref());
    if !owned {
        return Ok(());
    }
    match hpas.delete(old, &DeleteParams::default()).await {
        Ok(_) => {
            ctx.metrics.count_write("hpa");
            info!(hpa = old, new = %hpa_name(so), "deleted the HPA of the old name");
            Ok(())
        }
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Deletes the object's HPA; one that is already gone is fine, any other failure is retried.
pub(super) async fn delete(ctx: &Context, key: &str, so: &ScaledObject) -> Result<(), Error> {
    let hpas: Api<HorizontalPodAutoscaler> =
        Api::namespaced(ctx.client.clone(), &so.namespace().unwrap_or_default());
    lock(&ctx.applied).remove(key);
    match hpas.delete(&hpa_name(so), &DeleteParams::default()).await {
        Ok(_) => {
            ctx.metrics.count_write("hpa");
            Ok(())
        }
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// A digest of what ebb sets on an HPA and someone else might change: spec, labels, owners.
fn stored_digest(hpa: &HorizontalPodAutoscaler) -> u64 {
    digest::of_json(&(
        &hpa.spec,
        &hpa.metadata.labels,
        &hpa.metadata.owner_references,
    ))
}
