//! Walks a callflow tree on one call (spec b.4): run a node's module, continue with the child
//! it names (falling back to `_`), and when there is none, end the call — BYE if answered,
//! else 480 Temporarily Unavailable (spec j.19). A `CallEnded` from the call stops the walk.

use std::sync::Arc;

use super::modules::pivot::PivotServices;
use super::state::FlowState;
use super::{CallControl, CallEnded, CallTiming};
use crate::flow::{is_http_url, CallInfo, Node};
use crate::logsafe::wire;
use crate::media::prompt::{Prompt, PromptLibrary};
use crate::presence::PresenceControl;

/// Where the walk goes after a module.
#[derive(Clone, Debug, PartialEq)]
pub enum Next {
    /// The `_` child.
    Default,
    /// A named child, or `_` when the node has no child of that name.
    Branch(String),
    /// The module has ended the call (hangup, response): nothing more to do.
    Stop,
    /// Go on with this flow instead of the current tree (a pivot answer, spec b.3).
    Replace(Box<Node>),
}

/// Text to speech, as the runtime sees it (the TTS hook implements it).
#[async_trait::async_trait]
pub trait Speaker: Send + Sync {
    /// The prompt for `text` in a Kazoo voice (`female`, `male`) and language; the error is
    /// the logged reason.
    async fn speak(
        &self,
        text: &str,
        voice: &str,
        language: Option<&str>,
    ) -> Result<Arc<Prompt>, crate::media::tts::TtsError>;

    /// Whether `voice` is one of the operator's named voices (`[tts] voices`): a TwiML
    /// `<Say>` uses such a name as it is rather than mapping it as Twilio's.
    fn has_voice(&self, _voice: &str) -> bool {
        false
    }
}

/// Work a module leaves for the end of the call, whatever ends it (a TwiML pivot's CDR
/// POST, spec b.5). The runtime knows only that there is something to do.
pub trait AtCallEnd: Send + Sync {
    /// Called once, after the walk; must not hold the call up (spawn what takes time).
    fn call_ended(&self, info: &CallInfo, timing: CallTiming);
}

/// What every module may need besides the call: shared, read-only, one per server.
pub struct Runtime {
    pub prompts: Arc<PromptLibrary>,
    /// None: pivot nodes fail to their `_` child (and played URLs are skipped).
    pub pivot: Option<Arc<PivotServices>>,
    /// None: tts and TwiML Say are skipped with a log.
    pub tts: Option<Arc<dyn Speaker>>,
    /// Presence, for `manual_presence`. None: the module answers and goes on with a log.
    pub presence: Option<Arc<dyn PresenceControl>>,
}

impl Runtime {
    pub fn new(prompts: Arc<PromptLibrary>) -> Runtime {
        Runtime {
            prompts,
            pivot: None,
            tts: None,
            presence: None,
        }
    }

    /// Runs `flow` on `call` until the flow or the call ends.
    pub async fn run(&self, flow: &Node, call: &mut dyn CallControl) {
        let mut state = FlowState::default();
        if self.walk(flow, call, &mut state).await.is_err() {
            tracing::debug!(call_id = %wire(&call.info().call_id), "call ended during the callflow");
        }
        if let Some(at_end) = state.at_end.take() {
            at_end.call_ended(call.info(), call.timing());
        }
    }

    async fn walk(
        &self,
        flow: &Node,
        call: &mut dyn CallControl,
        state: &mut FlowState,
    ) -> Result<(), CallEnded> {
        // A flow a pivot server returns replaces the tree being walked (spec b.3); the walk
        // position is the path of child keys from the root.
        let mut replaced: Option<Node> = None;
        let mut path: Vec<String> = Vec::new();
        loop {
            let root = replaced.as_ref().unwrap_or(flow);
            let Some(node) = path.iter().try_fold(root, |n, k| n.children.get(k)) else {
                break;
            };
            let next = if node.skip_module {
                tracing::debug!(module = node.module.name(), "callflow: skip_module");
                Next::Default
            } else {
                tracing::debug!(module = node.module.name(), "callflow: running module");
                super::modules::run(&node.module, &node.children, call, self, state).await?
            };
            let key = match next {
                Next::Stop => return Ok(()),
                Next::Replace(new_flow) => {
                    replaced = Some(*new_flow);
                    path.clear();
                    continue;
                }
                Next::Default => "_".to_string(),
                Next::Branch(key) if node.children.contains_key(&key) => key,
                Next::Branch(_) => "_".to_string(),
            };
            if !node.children.contains_key(&key) {
                break;
            }
            path.push(key);
        }
        // Spec b.4 / j.19: a flow that runs out of children ends the call.
        if call.is_answered() {
            call.hangup().await
        } else {
            call.respond(480, None).await
        }
    }

    /// Speaks `text` through the TTS hook. `None` without a hook (not logged: each caller
    /// says what it skips, or falls back) or when the hook fails, logged as `failed`.
    pub async fn speak(
        &self,
        text: &str,
        voice: &str,
        language: Option<&str>,
        failed: &'static str,
    ) -> Option<Arc<Prompt>> {
        let tts = self.tts.as_ref()?;
        match tts.speak(text, voice, language).await {
            Ok(p) => Some(p),
            Err(reason) => {
                tracing::warn!(reason = %wire(&reason.to_string()), "{failed}");
                None
            }
        }
    }

    /// Resolves a play id (a prompt name, a URL, or a FreeSWITCH tone stream) to a prompt; an id that resolves to nothing is logged and gives
    /// `None`, and the module continues without it (Kazoo: the node just continues).
    pub async fn resolve_prompt(&self, id: &str) -> Option<Arc<Prompt>> {
        if crate::media::tone::is_tone_spec(id) {
            return match crate::media::tone::from_spec(id) {
                Ok(p) => Some(p),
                Err(e) => {
                    tracing::warn!(id = %wire(id), reason = %e, "play: tone not played");
                    None
                }
            };
        }
        if is_http_url(id) {
            let Some(svc) = self.pivot.as_ref() else {
                tracing::warn!(id = %wire(id), reason = "no HTTP client", "play: media not played");
                return None;
            };
            // Boxed: inlined, the HTTP fetch's state would sit in every module future that
            // resolves a prompt, for as long as that module runs (a prompt playing).
            return match Box::pin(svc.url_prompts.get(id)).await {
                Ok(p) => Some(p),
                Err(e) => {
                    tracing::warn!(id = %wire(id), reason = %wire(&e.to_string()), "play: media not played");
                    None
                }
            };
        }
        match self.prompts.get(id) {
            Ok(p) => Some(p),
            Err(e) => {
                tracing::warn!(id = %wire(id), reason = %wire(&e.to_string()), "play: media not played");
                None
            }
        }
    }

    #[cfg(test)]
    pub(crate) fn for_tests() -> Runtime {
        Runtime::new(Arc::new(PromptLibrary::new(None)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::callflow::fake::{FakeCall, Op};
    use crate::flow::modules::{play::Play, response::Response, sleep, ModuleData};
    use serde_json::json;
    use std::time::Duration;

    fn flow(v: serde_json::Value) -> Node {
        Node::from_json(&v).unwrap()
    }

    fn play(id: &str) -> Op {
        Op::Play(id.into())
    }

    #[tokio::test]
    async fn walks_default_children_and_ignores_named_ones() {
        let f = flow(json!({
            "module": "play", "data": {"id": "digit-1"},
            "children": {
                "other": {"module": "play", "data": {"id": "digit-9"}},
                "_": {"module": "sleep", "data": {"duration": 1},
                      "children": {"_": {"module": "play", "data": {"id": "digit-2"},
                                         "children": {"_": {"module": "hangup"}}}}}
            }
        }));
        let mut call = FakeCall::new();
        Runtime::for_tests().run(&f, &mut call).await;
        assert_eq!(
            call.ops,
            [
                Op::Answer,
                play("digit-1"),
                Op::Sleep(Duration::from_secs(1)),
                play("digit-2"),
                Op::Hangup
            ]
        );
    }

    #[tokio::test]
    async fn skip_module_goes_to_its_default_child() {
        let f = flow(json!({
            "module": "play", "data": {"id": "digit-1", "skip_module": true},
            "children": {"_": {"module": "hangup", "data": {"skip_module": true},
                               "children": {"_": {"module": "play", "data": {"id": "digit-2"}}}}}
        }));
        let mut call = FakeCall::new();
        Runtime::for_tests().run(&f, &mut call).await;
        // Only the last play ran; the flow then ended on an answered call: BYE.
        assert_eq!(call.ops, [Op::Answer, play("digit-2"), Op::Hangup]);
    }

    #[tokio::test]
    async fn end_of_flow_unanswered_responds_480() {
        let f = Node::new(ModuleData::Sleep(sleep::Sleep {
            duration: 5,
            unit: sleep::Unit::Ms,
        }));
        let mut call = FakeCall::new();
        Runtime::for_tests().run(&f, &mut call).await;
        assert_eq!(
            call.ops,
            [Op::Sleep(Duration::from_millis(5)), Op::Respond(480, None)]
        );
    }

    #[tokio::test]
    async fn end_of_flow_answered_hangs_up() {
        let f = Node::new(ModuleData::Play(Play::new("digit-5")));
        let mut call = FakeCall::new();
        Runtime::for_tests().run(&f, &mut call).await;
        assert_eq!(call.ops, [Op::Answer, play("digit-5"), Op::Hangup]);
    }

    #[tokio::test]
    async fn early_media_play_then_end_of_flow_is_480() {
        let f = flow(json!({"module": "play", "data": {"id": "digit-6", "answer": false}}));
        let mut call = FakeCall::new();
        Runtime::for_tests().run(&f, &mut call).await;
        assert_eq!(
            call.ops,
            [Op::EarlyMedia, play("digit-6"), Op::Respond(480, None)]
        );
    }

    #[tokio::test]
    async fn response_and_hangup_stop_the_flow() {
        let f = Node::new(ModuleData::Response(Response {
            code: 486,
            message: Some("Busy Here".into()),
            media: None,
        }))
        .then(Node::new(ModuleData::Play(Play::new("digit-1"))));
        let mut call = FakeCall::new();
        Runtime::for_tests().run(&f, &mut call).await;
        assert_eq!(call.ops, [Op::Respond(486, Some("Busy Here".into()))]);

        let f =
            Node::new(ModuleData::Hangup).then(Node::new(ModuleData::Play(Play::new("digit-1"))));
        let mut call = FakeCall::new();
        Runtime::for_tests().run(&f, &mut call).await;
        assert_eq!(call.ops, [Op::Hangup]);
    }

    #[tokio::test]
    async fn call_ended_stops_the_walk_at_once() {
        let f = flow(json!({
            "module": "play", "data": {"id": "digit-1"},
            "children": {"_": {"module": "play", "data": {"id": "digit-2"},
                               "children": {"_": {"module": "play", "data": {"id": "digit-3"}}}}}
        }));
        // The caller is gone at the 3rd operation (the second play): nothing after it.
        let mut call = FakeCall::ending_at(3);
        Runtime::for_tests().run(&f, &mut call).await;
        assert_eq!(call.ops, [Op::Answer, play("digit-1"), play("digit-2")]);

        // Ended during a sleep before answer: no 480 either.
        let f = flow(json!({"module": "sleep", "data": {"duration": 1}}));
        let mut call = FakeCall::ending_at(1);
        Runtime::for_tests().run(&f, &mut call).await;
        assert_eq!(call.ops, [Op::Sleep(Duration::from_secs(1))]);
    }

    #[tokio::test]
    async fn unresolvable_play_continues_to_the_next_node() {
        let f = flow(json!({
            "module": "play", "data": {"id": "missing-prompt-xyz"},
            "children": {"_": {"module": "response", "data": {"code": "486"}}}
        }));
        let mut call = FakeCall::new();
        Runtime::for_tests().run(&f, &mut call).await;
        assert_eq!(call.ops, [Op::Respond(486, None)]);
    }

    #[tokio::test]
    async fn a_bridge_failure_continues_with_the_child_its_cause_names() {
        use crate::flow::bridge::{BridgeOutcome, DialStatus};
        let f = flow(json!({
            "module": "device", "data": {"id": "d1"},
            "children": {
                "USER_BUSY": {"module": "play", "data": {"id": "digit-4"}},
                "_": {"module": "play", "data": {"id": "digit-9"}}
            }
        }));
        let mut call = FakeCall::new();
        call.bridge_outcomes
            .push_back(BridgeOutcome::from_sip_code(486, None));
        Runtime::for_tests().run(&f, &mut call).await;
        assert!(matches!(call.ops[0], Op::Bridge(_)));
        assert_eq!(call.ops[1..], [Op::Answer, play("digit-4"), Op::Hangup]);

        // Answered: the flow stops there; the call layer ends the call.
        let mut call = FakeCall::new();
        call.bridge_outcomes.push_back(BridgeOutcome {
            status: DialStatus::Completed,
            cause: "NORMAL_CLEARING",
            sip_code: Some(200),
            b_call_id: None,
            duration: Duration::from_secs(1),
        });
        Runtime::for_tests().run(&f, &mut call).await;
        assert_eq!(call.ops.len(), 1, "{:?}", call.ops);
    }

    #[test]
    fn run_future_is_send() {
        fn assert_send<T: Send>(_: &T) {}
        let rt = Runtime::for_tests();
        let f = Node::new(ModuleData::Hangup);
        let mut call = FakeCall::new();
        let fut = rt.run(&f, &mut call);
        assert_send(&fut);
    }
}
