//! `response` (spec c.8, `callflows.response.json`): answers the INVITE with a final SIP
//! `code` and reason `message` without answering the call; `media` is played first as early
//! media (183). Stops the flow (children unused).

use crate::callflow::runtime::{Next, Runtime};
use crate::callflow::{CallControl, CallEnded};
use crate::flow::modules::response::Response;

pub async fn run(
    data: &Response,
    call: &mut dyn CallControl,
    rt: &Runtime,
) -> Result<Next, CallEnded> {
    let prompt = match data.media.as_deref() {
        Some(id) => rt.resolve_prompt(id).await,
        None => None,
    };
    if let Some(prompt) = prompt {
        if !call.is_answered() {
            call.early_media().await?;
        }
        call.play(prompt, &[]).await?;
    }
    call.respond(data.code, data.message.clone()).await?;
    Ok(Next::Stop)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::callflow::fake::{FakeCall, Op};

    #[tokio::test]
    async fn responds_with_code_and_message_without_answering() {
        let rt = Runtime::for_tests();
        let mut call = FakeCall::new();
        let r = Response {
            code: 486,
            message: Some("Busy Here".into()),
            media: None,
        };
        assert_eq!(run(&r, &mut call, &rt).await, Ok(Next::Stop));
        assert_eq!(call.ops, [Op::Respond(486, Some("Busy Here".into()))]);
        assert!(!call.answered);
    }

    #[tokio::test]
    async fn media_is_played_as_early_media_before_the_response() {
        let rt = Runtime::for_tests();
        let mut call = FakeCall::new();
        let r = Response {
            code: 404,
            message: None,
            media: Some("error".into()),
        };
        run(&r, &mut call, &rt).await.unwrap();
        assert_eq!(
            call.ops,
            [
                Op::EarlyMedia,
                Op::Play("error".into()),
                Op::Respond(404, None)
            ]
        );
    }

    #[tokio::test]
    async fn missing_media_still_responds() {
        let rt = Runtime::for_tests();
        let mut call = FakeCall::new();
        let r = Response {
            code: 503,
            message: None,
            media: Some("nope-not-here".into()),
        };
        run(&r, &mut call, &rt).await.unwrap();
        assert_eq!(call.ops, [Op::Respond(503, None)]);
    }
}
