//! `GET pods/{name}/log` (`kubectl logs`): a container's output from the kubelet's log files,
//! with `container`, `previous` (the run before the last restart), `tailLines`, `limitBytes`
//! and `follow` (new output streamed until the pod is gone or the client leaves), and the
//! real server's 400s for a pod of several containers without `container`, an unknown
//! container, or a container that has not started.

use super::*;
use std::path::PathBuf;

/// How often a followed log is read again for new output.
const FOLLOW_POLL: Duration = Duration::from_millis(200);

/// The log file of `container` in `pod` (the previous run's with `previous`).
fn log_path(shared: &Shared, pod: &Value, container: &str, previous: bool) -> Option<PathBuf> {
    let dirs = shared.pod_dirs.read().expect("pod dirs lock").clone()?;
    let s = |p: &str| pod.pointer(p).and_then(Value::as_str).unwrap_or_default();
    let uid: String = s("/metadata/uid").chars().take(8).collect();
    let file = if previous {
        format!("{container}.previous.log")
    } else {
        format!("{container}.log")
    };
    Some(
        dirs.join(format!(
            "{}_{}_{uid}",
            s("/metadata/namespace"),
            s("/metadata/name")
        ))
        .join("logs")
        .join(file),
    )
}

/// The last `n` lines of `text`.
fn tail(text: &[u8], n: usize) -> &[u8] {
    if n == 0 {
        return &[];
    }
    let body = text.strip_suffix(b"\n").unwrap_or(text);
    let mut seen = 0;
    for (i, b) in body.iter().enumerate().rev() {
        if *b == b'\n' {
            seen += 1;
            if seen == n {
                return &text[i + 1..];
            }
        }
    }
    text
}

pub(super) async fn pod_log(
    shared: &Arc<Shared>,
    pod: &Value,
    q: &HashMap<String, String>,
) -> Result<Response<Body>, ApiError> {
    let name = pod
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let containers: Vec<String> = pod
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|c| c["name"].as_str().map(str::to_string))
        .collect();
    let container = match q.get("container").filter(|c| !c.is_empty()) {
        Some(c) if containers.contains(c) => c.clone(),
        Some(c) => {
            return Err(ApiError::bad_request(format!(
                "container {c} is not valid for pod {name}"
            )));
        }
        None if containers.len() == 1 => containers[0].clone(),
        None => {
            return Err(ApiError::bad_request(format!(
                "a container name must be specified for pod {name}, choose one of: [{}]",
                containers.join(" ")
            )));
        }
    };
    let flag = |k: &str| q.get(k).and_then(|v| parse_bool(v)).unwrap_or(false);
    let number = |k: &str| -> Result<Option<u64>, ApiError> {
        q.get(k)
            .map(|v| {
                v.parse::<u64>().map_err(|_| {
                    ApiError::bad_request(format!("{k}: {v:?} is not a non-negative number"))
                })
            })
            .transpose()
    };
    let (previous, follow) = (flag("previous"), flag("follow"));
    let tail_lines = number("tailLines")?;
    let limit = number("limitBytes")?;
    let path = log_path(shared, pod, &container, previous);
    let text = match path.as_ref().map(std::fs::read) {
        Some(Ok(t)) => t,
        _ if previous => {
            return Err(ApiError::bad_request(format!(
                "previous terminated container \"{container}\" in pod \"{name}\" not found"
            )));
        }
        _ => {
            return Err(ApiError::bad_request(format!(
                "container \"{container}\" in pod \"{name}\" is waiting to start: ContainerCreating"
            )));
        }
    };
    let mut first = match tail_lines {
        Some(n) => tail(&text, usize::try_from(n).unwrap_or(usize::MAX)).to_vec(),
        None => text.clone(),
    };
    if let Some(l) = limit {
        first.truncate(usize::try_from(l).unwrap_or(usize::MAX));
    }
    let plain = |body: Body| {
        Response::builder()
            .status(StatusCode::OK)
            .header(header::CONTENT_TYPE, "text/plain")
            .header(header::CACHE_CONTROL, "no-cache, private")
            .body(body)
            .expect("valid response")
    };
    let (Some(path), true, false) = (path, follow, previous) else {
        return Ok(plain(BodyExt::boxed(
            Full::new(Bytes::from(first)).map_err(|never| match never {}),
        )));
    };
    // Follow: what the file holds now, then what is appended, until the pod is gone (or
    // re-created: another uid) or the client stops reading.
    let (tx, rx) = mpsc::channel::<Result<Frame<Bytes>, std::io::Error>>(16);
    let store = shared.store.clone();
    let ns = pod
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let uid = pod.pointer("/metadata/uid").cloned();
    let mut offset = text.len();
    tokio::spawn(async move {
        if !first.is_empty() && tx.send(Ok(Frame::data(Bytes::from(first)))).await.is_err() {
            return;
        }
        loop {
            tokio::time::sleep(FOLLOW_POLL).await;
            let alive = store
                .read()
                .expect("store lock")
                .get("pods", &ns, &name)
                .is_some_and(|p| p.pointer("/metadata/uid") == uid.as_ref());
            let now = std::fs::read(&path).unwrap_or_default();
            // A restart moved the file aside: the new run's output starts from 0.
            if now.len() < offset {
                offset = 0;
            }
            if now.len() > offset {
                let chunk = Bytes::copy_from_slice(&now[offset..]);
                offset = now.len();
                if tx.send(Ok(Frame::data(chunk))).await.is_err() {
                    return;
                }
            }
            if !alive || tx.is_closed() {
                return;
            }
        }
    });
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    Ok(plain(BodyExt::boxed(StreamBody::new(stream))))
}

#[cfg(test)]
mod tests {
    use super::tail;

    #[test]
    fn tails_count_lines_from_the_end() {
        assert_eq!(tail(b"a\nb\nc\n", 2), b"b\nc\n");
        assert_eq!(tail(b"a\nb\nc", 1), b"c");
        assert_eq!(tail(b"a\nb\n", 5), b"a\nb\n");
        assert_eq!(tail(b"a\n", 0), b"");
    }
}
