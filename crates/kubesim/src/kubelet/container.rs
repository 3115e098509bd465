//! One container's life: start, restart with back-off, and the stop a deletion asks for.

#![forbid(unsafe_code)]

use super::*;

/// One container: start, probe, restart with back-off, stop on the pod's deletion.
pub(super) async fn run_container(
    shared: Arc<Shared>,
    rt: Arc<PodRuntime>,
    i: usize,
    c: Container,
    facts: PodFacts,
    mounts: MountMap,
) {
    let mut stop = rt.stop.subscribe();
    let mut failures: u32 = 0;
    let log = rt.dir.join("logs").join(format!("{}.log", c.name));
    let mut runs = 0u32;
    loop {
        if rt.stop_deadline().is_some() {
            return;
        }

        let plan = plan::launch_plan(
            &c,
            &facts,
            secret_lookup(&shared, &rt.namespace),
            &shared.config.images,
            &mounts,
            &base_env(&shared, &rt, &c.name),
        );
        let plan = match plan {
            Ok(p) => p,
            Err(e) => {
                rt.update(i, |v| {
                    v.state = ContainerState::Waiting {
                        reason: e.reason().into(),
                        message: e.to_string(),
                    }
                });
                rt.event(&shared, "Warning", "Failed", &format!("Error: {e}"));
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(2)) => continue,
                    _ = stopped(&mut stop) => return,
                }
            }
        };
        // A restart keeps the last run's output as the previous log (`kubectl logs -p`).
        if runs > 0 {
            let _ = std::fs::rename(&log, log.with_extension("previous.log"));
        }
        runs += 1;
        let started = Instant::now();
        let started_at = util::now_time();
        let spawned = container_command(
            &shared,
            &rt,
            &c.name,
            &plan.program,
            &plan.args,
            &plan.env,
            &log,
        )
        .and_then(|mut cmd| cmd.spawn());
        let mut child = match spawned {
            Ok(child) => child,
            Err(e) => {
                failures += 1;
                let message = format!(
                    "failed to start container {:?}: exec {:?}: {e}",
                    c.name, plan.program
                );
                rt.update(i, |v| {
                    v.state = ContainerState::Waiting {
                        reason: "RunContainerError".into(),
                        message: message.clone(),
                    }
                });
                rt.event(&shared, "Warning", "Failed", &message);
                if !back_off(&shared, &rt, i, &c, failures, &mut stop).await {
                    return;
                }
                continue;
            }
        };
        let pid = child.id().unwrap_or_default();
        let has_readiness = c.readiness_probe.is_some();
        rt.update(i, |v| {
            v.state = ContainerState::Running {
                started_at: started_at.clone(),
            };
            v.pid = Some(pid);
            v.started_once = true;
            v.ready = !has_readiness;
        });
        rt.event(
            &shared,
            "Normal",
            "Started",
            &format!("Started container {}", c.name),
        );
        let (liveness_tx, mut liveness_failed) = tokio::sync::mpsc::channel::<String>(1);
        // Readiness only reports; liveness also asks for a restart through the channel.
        let mut probes = Vec::new();
        for (probe, on_failure) in [
            (c.readiness_probe.clone(), None),
            (c.liveness_probe.clone(), Some(liveness_tx)),
        ] {
            if let Some(p) = probe {
                probes.push(tokio::spawn(probe_loop(
                    shared.clone(),
                    rt.clone(),
                    i,
                    c.clone(),
                    p,
                    plan.clone(),
                    on_failure,
                )));
            }
        }
        let status = tokio::select! {
            status = child.wait() => status.ok(),
            _ = stopped(&mut stop) => {
                let deadline = rt.stop_deadline().unwrap_or_else(Instant::now);
                stop_container(&shared, &rt, &c, &plan, &mut child, deadline).await
            }
            Some(why) = liveness_failed.recv() => {
                rt.event(&shared, "Normal", "Killing",
                    &format!("Container {} failed liveness probe, will be restarted: {why}", c.name));
                stop_container(&shared, &rt, &c, &plan, &mut child, Instant::now() + rt.grace).await
            }
        };
        for p in probes {
            p.abort();
        }
        // Whatever the container left behind in its process group goes with it.
        signal_group(pid, libc::SIGKILL);
        let code = status.map_or(137, exit_code);
        let terminated = ContainerState::Terminated {
            exit_code: code,
            reason: if code == 0 {
                "Completed".into()
            } else {
                "Error".into()
            },
            started_at: started_at.clone(),
            finished_at: util::now_time(),
        };
        rt.update(i, |v| {
            v.state = terminated.clone();
            v.pid = None;
            v.ready = false;
        });
        if rt.stop_deadline().is_some() {
            return;
        }
        tracing::info!(pod = %rt.name, container = %c.name, exit_code = code, "kubelet: container exited; restarting");
        // A container that ran ten minutes starts its back-off afresh.
        if started.elapsed() > Duration::from_secs(600) {
            failures = 0;
        }
        failures += 1;
        rt.update(i, |v| {
            v.last_state = Some(terminated);
            v.restart_count += 1;
        });
        if !back_off(&shared, &rt, i, &c, failures, &mut stop).await {
            return;
        }
    }
}

/// Waits out the CrashLoopBackOff delay; false when the pod is stopping meanwhile.
pub(super) async fn back_off(
    shared: &Shared,
    rt: &PodRuntime,
    i: usize,
    c: &Container,
    failures: u32,
    stop: &mut watch::Receiver<Option<Instant>>,
) -> bool {
    let delay = plan::backoff_delay(
        failures,
        shared.config.backoff_initial,
        shared.config.backoff_max,
    );
    if delay.is_zero() {
        return true;
    }
    let message = format!(
        "back-off {} restarting failed container={} pod={}_{}({})",
        humanize(delay),
        c.name,
        rt.name,
        rt.namespace,
        rt.uid
    );
    rt.update(i, |v| {
        v.state = ContainerState::Waiting {
            reason: "CrashLoopBackOff".into(),
            message,
        }
    });
    rt.event(
        shared,
        "Warning",
        "BackOff",
        &format!(
            "Back-off restarting failed container {} in pod {}_{}({})",
            c.name, rt.name, rt.namespace, rt.uid
        ),
    );
    tokio::select! {
        _ = tokio::time::sleep(delay) => true,
        _ = stopped(stop) => false,
    }
}

/// Resolves once the pod is to stop (the watch guard is dropped here, not held across awaits).
pub(super) async fn stopped(stop: &mut watch::Receiver<Option<Instant>>) {
    let _ = stop.wait_for(Option::is_some).await;
}

pub(super) fn humanize(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 60 {
        format!("{}m{}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}

/// Stops a container as the kubelet does: the preStop hook (bounded by the grace period),
/// then SIGTERM, then SIGKILL at the deadline.
pub(super) async fn stop_container(
    shared: &Shared,
    rt: &PodRuntime,
    c: &Container,
    plan: &plan::LaunchPlan,
    child: &mut tokio::process::Child,
    deadline: Instant,
) -> Option<std::process::ExitStatus> {
    rt.event(
        shared,
        "Normal",
        "Killing",
        &format!("Stopping container {}", c.name),
    );
    let pid = child.id()?;
    if let Some(hook) = c.lifecycle.as_ref().and_then(|l| l.pre_stop.as_ref()) {
        let run_hook = async {
            if let Some(exec) = &hook.exec {
                run_exec(
                    shared,
                    rt,
                    exec.command.as_deref().unwrap_or_default(),
                    plan,
                )
                .await
            } else if let Some(get) = &hook.http_get {
                let port = resolve_port(c, &get.port);
                http_get(
                    rt.ip,
                    port,
                    get.path.as_deref().unwrap_or("/"),
                    deadline.saturating_duration_since(Instant::now()),
                    probe::Scheme::of(get.scheme.as_deref()),
                )
                .await
            } else if let Some(sleep) = &hook.sleep {
                tokio::time::sleep(Duration::from_secs(sleep.seconds.max(0) as u64)).await;
                Ok(())
            } else {
                Ok(())
            }
        };
        tokio::select! {
            r = run_hook => if let Err(e) = r {
                rt.event(shared, "Warning", "FailedPreStopHook",
                    &format!("PreStopHook failed: {e}"));
            },
            status = child.wait() => return status.ok(),
            _ = tokio::time::sleep_until(deadline.into()) => {}
        }
    }
    signal(pid, libc::SIGTERM);
    tokio::select! {
        status = child.wait() => status.ok(),
        _ = tokio::time::sleep_until(deadline.into()) => {
            signal_group(pid, libc::SIGKILL);
            child.wait().await.ok()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn back_off_delays_read_as_kubectl_shows_them() {
        assert_eq!(humanize(Duration::from_secs(10)), "10s");
        assert_eq!(humanize(Duration::from_secs(59)), "59s");
        assert_eq!(humanize(Duration::from_secs(300)), "5m0s");
        assert_eq!(humanize(Duration::from_millis(80_500)), "1m20s");
    }
}
