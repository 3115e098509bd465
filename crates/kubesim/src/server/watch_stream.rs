//! Watch streaming: resuming from a resourceVersion, encoding events, bookmarks and timeouts.

use super::*;

pub(super) fn event_line(kind: &str, obj: &Value) -> Bytes {
    let mut line = serde_json::to_vec(&json!({"type": kind, "object": obj})).unwrap_or_default();
    line.push(b'\n');
    Bytes::from(line)
}

/// Turns watch events into lines: plain objects, or one-row Tables for `kubectl get -w`
/// (column definitions in the first Table only, as the real server sends them).
pub(super) struct Encoder {
    pub(super) rt: &'static ResourceType,
    pub(super) as_table: bool,
    pub(super) columns_sent: bool,
}

impl Encoder {
    fn object(&mut self, ty: &str, view: &Value) -> Bytes {
        if !self.as_table {
            return event_line(ty, view);
        }
        let meta = json!({"resourceVersion": view["metadata"]["resourceVersion"].clone()});
        let t = crate::table::table(
            self.rt,
            std::slice::from_ref(view),
            meta,
            !self.columns_sent,
        );
        self.columns_sent = true;
        event_line(ty, &t)
    }

    fn bookmark(&self, rv: u64, initial_end: bool) -> Bytes {
        let mut meta = json!({"resourceVersion": rv.to_string()});
        if initial_end {
            meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        event_line(
            "BOOKMARK",
            &json!({"kind": self.rt.kind, "apiVersion": self.rt.api_version(), "metadata": meta}),
        )
    }
}

/// What one watch asks for.
pub(super) struct WatchSpec {
    pub(super) rt: &'static ResourceType,
    pub(super) ns: Option<String>,
    pub(super) opts: ListOptions,
    pub(super) send_initial_events: Option<bool>,
    pub(super) bookmarks: bool,
    pub(super) timeout: Duration,
    pub(super) token: Option<String>,
    pub(super) as_table: bool,
}

/// The watch event (if any) a change produces for one watcher, with selector transitions
/// turned into ADDED/DELETED as the cacher does.
pub(super) fn event_for(spec: &WatchSpec, enc: &mut Encoder, c: &Change) -> Option<Bytes> {
    let rt = spec.rt;
    if c.storage != rt.storage || spec.ns.as_deref().is_some_and(|n| n != c.key.0) {
        return None;
    }
    let new_matches = c.kind != ChangeKind::Deleted && api::matches(&c.new, &spec.opts);
    let old_matches = c.old.as_ref().is_some_and(|o| api::matches(o, &spec.opts));
    let (ty, obj) = match (c.kind, old_matches, new_matches) {
        (ChangeKind::Deleted, true, _) => ("DELETED", (*c.new).clone()),
        (ChangeKind::Deleted, false, _) => return None,
        (_, false, true) => ("ADDED", (*c.new).clone()),
        (_, true, true) => ("MODIFIED", (*c.new).clone()),
        (_, true, false) => {
            // Stopped matching: the previous content with the new resourceVersion.
            let mut o = (**c.old.as_ref().expect("old matched")).clone();
            o["metadata"]["resourceVersion"] = c.new["metadata"]["resourceVersion"].clone();
            ("DELETED", o)
        }
        (_, false, false) => return None,
    };
    Some(enc.object(ty, &api::to_view(rt, &obj)))
}

pub(super) fn too_large_rv(n: u64, current: u64) -> ApiError {
    ApiError {
        code: 504,
        reason: "Timeout",
        message: format!("Too large resource version: {n}, current: {current}"),
        details: Some(
            json!({"causes":[{"reason":"ResourceVersionTooLarge","message":"Too large resource version"}],"retryAfterSeconds":1}),
        ),
        retry_after_seconds: None,
    }
}

pub(super) fn start_watch(
    shared: Arc<Shared>,
    spec: WatchSpec,
) -> Result<Response<Body>, ApiError> {
    let rt = spec.rt;
    let rv_param = spec.opts.resource_version.clone().unwrap_or_default();
    let mut enc = Encoder {
        rt,
        as_table: spec.as_table,
        columns_sent: false,
    };
    let mut prelude: Vec<Bytes> = Vec::new();
    let sub: broadcast::Receiver<Arc<Change>>;
    let start_rv: u64;
    {
        let store = shared.store.read().expect("store lock");
        let from_now = rv_param.is_empty() || rv_param == "0";
        let initial = spec.send_initial_events.unwrap_or(from_now);
        if initial || from_now {
            start_rv = store.rv();
            if initial {
                for obj in store.list(rt.storage, spec.ns.as_deref()) {
                    if api::matches(&obj, &spec.opts) {
                        prelude.push(enc.object("ADDED", &api::to_view(rt, &obj)));
                    }
                }
                if spec.send_initial_events == Some(true) && spec.bookmarks {
                    prelude.push(enc.bookmark(start_rv, true));
                }
            }
            sub = store
                .watch_from(start_rv)
                .expect("current rv is retained")
                .1;
        } else {
            let n: u64 = rv_param.parse().map_err(|_| {
                ApiError::bad_request(format!("invalid resource version: {rv_param}"))
            })?;
            if n > store.rv() {
                return Err(too_large_rv(n, store.rv()));
            }
            match store.watch_from(n) {
                Ok((replay, s)) => {
                    for c in replay {
                        if let Some(line) = event_for(&spec, &mut enc, &c) {
                            prelude.push(line);
                        }
                    }
                    start_rv = store.rv();
                    sub = s;
                }
                Err(floor) => {
                    // In-band 410: HTTP 200, one ERROR line, then the end of the stream.
                    let err = ApiError::expired(format!("too old resource version: {n} ({floor})"));
                    prelude.push(event_line("ERROR", &err.to_status()));
                    let body = StreamBody::new(futures::stream::iter(
                        prelude.into_iter().map(|b| Ok(Frame::data(b))),
                    ));
                    return Ok(stream_response(BodyExt::boxed(body)));
                }
            }
        }
    }
    let (tx, rx) = mpsc::channel::<Result<Frame<Bytes>, std::io::Error>>(256);
    tokio::spawn(run_watch(shared, spec, enc, prelude, sub, start_rv, tx));
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    Ok(stream_response(BodyExt::boxed(StreamBody::new(stream))))
}

pub(super) fn stream_response(body: Body) -> Response<Body> {
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CACHE_CONTROL, "no-cache, private")
        .body(body)
        .expect("valid response")
}

/// Sends one line, first passing the client's network-level faults. False: stop the watch.
pub(super) async fn send_line(
    shared: &Shared,
    token: Option<&str>,
    tx: &mpsc::Sender<Result<Frame<Bytes>, std::io::Error>>,
    line: Bytes,
) -> bool {
    if !shared.faults.stream_gate(token).await {
        let _ = tx
            .send(Err(std::io::Error::other(
                "connection dropped by fault injection",
            )))
            .await;
        return false;
    }
    tx.send(Ok(Frame::data(line))).await.is_ok()
}

pub(super) async fn run_watch(
    shared: Arc<Shared>,
    spec: WatchSpec,
    mut enc: Encoder,
    prelude: Vec<Bytes>,
    mut sub: broadcast::Receiver<Arc<Change>>,
    mut progress_rv: u64,
    tx: mpsc::Sender<Result<Frame<Bytes>, std::io::Error>>,
) {
    let token = spec.token.clone();
    let token = token.as_deref();
    // Any u64 of seconds is a valid timeoutSeconds; one too far for the clock means "no
    // deadline in this process's life" (a century), never an overflow.
    let now = tokio::time::Instant::now();
    let deadline = now
        .checked_add(spec.timeout)
        .unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 86_400));
    for line in prelude {
        if !send_line(&shared, token, &tx, line).await {
            return;
        }
    }
    let mut bookmark_tick = tokio::time::interval_at(
        tokio::time::Instant::now() + Duration::from_secs(60),
        Duration::from_secs(60),
    );
    // Like the cacher, one bookmark shortly before the timeout, so a client can resume exactly.
    let pre_deadline = deadline
        .checked_sub(Duration::from_secs(2))
        .filter(|_| spec.timeout > Duration::from_secs(3));
    let mut pre_deadline_sent = pre_deadline.is_none();
    loop {
        let pre = async {
            match pre_deadline {
                Some(t) if !pre_deadline_sent => tokio::time::sleep_until(t).await,
                _ => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => return,
            _ = tx.closed() => return,
            _ = bookmark_tick.tick(), if spec.bookmarks => {
                if !send_line(&shared, token, &tx, enc.bookmark(progress_rv, false)).await { return; }
            }
            _ = pre, if spec.bookmarks => {
                pre_deadline_sent = true;
                if !send_line(&shared, token, &tx, enc.bookmark(progress_rv, false)).await { return; }
            }
            msg = sub.recv() => match msg {
                Ok(c) => {
                    progress_rv = c.rv;
                    if let Some(line) = event_for(&spec, &mut enc, &c)
                        && !send_line(&shared, token, &tx, line).await
                    {
                        return;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    // Fell behind the channel: resume from the history, or expire.
                    let resumed = shared.store.read().expect("store lock").watch_from(progress_rv);
                    match resumed {
                        Ok((replay, s)) => {
                            sub = s;
                            for c in replay {
                                progress_rv = c.rv;
                                if let Some(line) = event_for(&spec, &mut enc, &c)
                                    && !send_line(&shared, token, &tx, line).await
                                {
                                    return;
                                }
                            }
                        }
                        Err(floor) => {
                            let err = ApiError::expired(format!("too old resource version: {progress_rv} ({floor})"));
                            let _ = send_line(&shared, token, &tx, event_line("ERROR", &err.to_status())).await;
                            return;
                        }
                    }
                }
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    }
}
