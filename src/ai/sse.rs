//! Server-Sent Events: an incremental decoder for vendor streams and an encoder for ours.

use std::collections::VecDeque;

use futures_util::StreamExt;

use super::error::{AiError, ErrorKind};
use super::provider::EventStream;
use super::types::StreamEvent;

/// One decoded event: its `event:` name (empty when absent) and joined `data:` lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    pub event: String,
    pub data: String,
}

/// Feed bytes as they arrive; complete events come out. Handles `\n` and `\r\n`, events
/// split across chunks, comments and multi-line data.
#[derive(Debug, Default)]
pub struct SseDecoder {
    buf: Vec<u8>,
    event: String,
    data: Vec<String>,
}

/// Largest event we accept; a vendor sending more without a blank line is broken.
const MAX_EVENT_BYTES: usize = 8 * 1024 * 1024;

impl SseDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Returns the events completed by `chunk`, or an error if an event grows too large.
    pub fn feed(&mut self, chunk: &[u8]) -> Result<Vec<SseEvent>, String> {
        self.buf.extend_from_slice(chunk);
        let mut out = Vec::new();
        while let Some(pos) = self.buf.iter().position(|&b| b == b'\n') {
            let mut line: Vec<u8> = self.buf.drain(..=pos).collect();
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            let line = String::from_utf8_lossy(&line).into_owned();
            if line.is_empty() {
                if !self.data.is_empty() || !self.event.is_empty() {
                    out.push(SseEvent {
                        event: std::mem::take(&mut self.event),
                        data: std::mem::take(&mut self.data).join("\n"),
                    });
                }
                continue;
            }
            if line.starts_with(':') {
                continue;
            }
            let (field, value) = match line.split_once(':') {
                Some((f, v)) => (f.to_string(), v.strip_prefix(' ').unwrap_or(v).to_string()),
                None => (line.clone(), String::new()),
            };
            match field.as_str() {
                "event" => self.event = value,
                "data" => self.data.push(value),
                _ => {}
            }
        }
        if self.buf.len() > MAX_EVENT_BYTES {
            return Err("stream event too large".into());
        }
        Ok(out)
    }
}

/// What a wire format's parser makes of one decoded event.
pub enum Step {
    /// These events, and the stream goes on.
    Emit(Vec<StreamEvent>),
    /// These events, and the stream is complete.
    Done(Vec<StreamEvent>),
    /// The vendor reported an error or sent something unreadable.
    Fail(String),
}

/// Turns a vendor's SSE response body into neutral stream events using `parse` for each
/// event. A body that ends before `parse` says `Done`, breaks, or is unreadable ends the
/// stream with a `StreamBroken` error item — never a silent, truncated success.
pub fn events(
    resp: super::client::VendorResponse,
    parse: impl FnMut(&SseEvent) -> Step + Send + 'static,
) -> EventStream {
    struct St<B, P> {
        bytes: B,
        dec: SseDecoder,
        parse: P,
        queue: VecDeque<Result<StreamEvent, AiError>>,
        done: bool,
    }
    let broken = |m: String| Err(AiError::new(ErrorKind::StreamBroken, m));
    let st = St {
        bytes: Box::pin(super::client::body_stream(resp)),
        dec: SseDecoder::new(),
        parse,
        queue: VecDeque::new(),
        done: false,
    };
    Box::pin(futures_util::stream::unfold(st, move |mut st| async move {
        loop {
            if let Some(item) = st.queue.pop_front() {
                return Some((item, st));
            }
            if st.done {
                return None;
            }
            match st.bytes.next().await {
                None => {
                    st.done = true;
                    st.queue
                        .push_back(broken("the vendor stream ended early".into()));
                }
                Some(Err(mut err)) => {
                    st.done = true;
                    err.kind = ErrorKind::StreamBroken;
                    st.queue.push_back(Err(err));
                }
                Some(Ok(chunk)) => match st.dec.feed(&chunk) {
                    Err(m) => {
                        st.done = true;
                        st.queue.push_back(broken(m));
                    }
                    Ok(decoded) => {
                        for ev in decoded {
                            match (st.parse)(&ev) {
                                Step::Emit(evs) => st.queue.extend(evs.into_iter().map(Ok)),
                                Step::Done(evs) => {
                                    st.queue.extend(evs.into_iter().map(Ok));
                                    st.done = true;
                                    break;
                                }
                                Step::Fail(m) => {
                                    st.queue.push_back(broken(m));
                                    st.done = true;
                                    break;
                                }
                            }
                        }
                    }
                },
            }
        }
    }))
}

/// Encodes one event (`event:` line only when named).
pub fn encode(event: Option<&str>, data: &str) -> String {
    let mut s = String::with_capacity(data.len() + 16);
    if let Some(e) = event {
        s.push_str("event: ");
        s.push_str(e);
        s.push('\n');
    }
    for line in data.split('\n') {
        s.push_str("data: ");
        s.push_str(line);
        s.push('\n');
    }
    s.push('\n');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_across_chunk_boundaries() {
        let mut d = SseDecoder::new();
        let mut evs = d.feed(b"event: a\ndata: {\"x\"").unwrap();
        assert!(evs.is_empty());
        evs.extend(
            d.feed(b":1}\r\n\r\n: comment\n\ndata: one\ndata: two\n\n")
                .unwrap(),
        );
        assert_eq!(
            evs,
            vec![
                SseEvent {
                    event: "a".into(),
                    data: "{\"x\":1}".into()
                },
                SseEvent {
                    event: String::new(),
                    data: "one\ntwo".into()
                },
            ]
        );
    }

    #[test]
    fn encode_round_trips() {
        let mut d = SseDecoder::new();
        let evs = d.feed(encode(Some("ping"), "a\nb").as_bytes()).unwrap();
        assert_eq!(evs[0].event, "ping");
        assert_eq!(evs[0].data, "a\nb");
    }
}
