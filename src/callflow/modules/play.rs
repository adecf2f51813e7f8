//! `play` (spec c.2, `callflows.play.json`): answers the call (or, with `answer: false`, sends
//! a 183 and plays as early media), then plays `id` `loop_count` times, or until the call ends
//! with `endless_playback`. An id that resolves to nothing is logged and the node continues.

use crate::callflow::runtime::{Next, Runtime};
use crate::callflow::state::FlowState;
use crate::callflow::{CallControl, CallEnded};
use crate::flow::modules::play::Play;

pub async fn run(
    data: &Play,
    call: &mut dyn CallControl,
    rt: &Runtime,
    state: &mut FlowState,
) -> Result<Next, CallEnded> {
    let Some(prompt) = rt.resolve_prompt(&data.id).await else {
        return Ok(Next::Default);
    };
    if !call.is_answered() {
        if data.answer {
            call.answer().await?;
        } else {
            call.early_media().await?;
        }
    }
    let times = if data.endless_playback {
        u32::MAX
    } else {
        data.loop_count.unwrap_or(1)
    };
    let played = super::Played {
        what: "media",
        id: &data.id,
    };
    super::play_collecting(call, &prompt, times, &data.terminators, state, played).await?;
    Ok(Next::Default)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::callflow::fake::{FakeCall, Op};

    #[tokio::test]
    async fn answers_first_then_plays() {
        let rt = Runtime::for_tests();
        let mut call = FakeCall::new();
        let next = run(
            &Play::new("digit-1"),
            &mut call,
            &rt,
            &mut FlowState::default(),
        )
        .await;
        assert_eq!(next, Ok(Next::Default));
        assert_eq!(call.ops, [Op::Answer, Op::Play("digit-1".into())]);
    }

    #[tokio::test]
    async fn answer_false_plays_as_early_media() {
        let rt = Runtime::for_tests();
        let mut call = FakeCall::new();
        let p = Play {
            answer: false,
            ..Play::new("digit-2")
        };
        run(&p, &mut call, &rt, &mut FlowState::default())
            .await
            .unwrap();
        assert_eq!(call.ops, [Op::EarlyMedia, Op::Play("digit-2".into())]);
        assert!(!call.answered);
    }

    #[tokio::test]
    async fn already_answered_call_is_not_answered_again() {
        let rt = Runtime::for_tests();
        let mut call = FakeCall::new();
        call.answered = true;
        run(
            &Play {
                answer: false,
                ..Play::new("digit-2")
            },
            &mut call,
            &rt,
            &mut FlowState::default(),
        )
        .await
        .unwrap();
        assert_eq!(call.ops, [Op::Play("digit-2".into())]);
    }

    #[tokio::test]
    async fn loop_count_plays_that_many_times() {
        let rt = Runtime::for_tests();
        let mut call = FakeCall::new();
        let p = Play {
            loop_count: Some(3),
            ..Play::new("digit-3")
        };
        run(&p, &mut call, &rt, &mut FlowState::default())
            .await
            .unwrap();
        let d3 = Op::Play("digit-3".into());
        assert_eq!(call.ops, [Op::Answer, d3.clone(), d3.clone(), d3]);
    }

    #[tokio::test]
    async fn endless_playback_loops_until_the_call_ends() {
        let rt = Runtime::for_tests();
        let mut call = FakeCall::ending_at(6);
        let p = Play {
            endless_playback: true,
            loop_count: Some(2),
            ..Play::new("digit-4")
        };
        assert_eq!(
            run(&p, &mut call, &rt, &mut FlowState::default()).await,
            Err(CallEnded)
        );
        // answer + 5 plays; the 6th operation found the call gone.
        assert_eq!(call.ops.len(), 6);
        assert_eq!(
            call.ops
                .iter()
                .filter(|o| **o == Op::Play("digit-4".into()))
                .count(),
            5
        );
    }

    #[tokio::test]
    async fn unresolvable_prompt_continues_without_touching_the_call() {
        let rt = Runtime::for_tests();
        let mut call = FakeCall::new();
        for id in [
            "no-such-prompt-here",
            "../etc/passwd",
            "https://example.test/a.wav",
        ] {
            assert_eq!(
                run(&Play::new(id), &mut call, &rt, &mut FlowState::default()).await,
                Ok(Next::Default)
            );
        }
        assert!(call.ops.is_empty(), "{:?}", call.ops);
    }
}
