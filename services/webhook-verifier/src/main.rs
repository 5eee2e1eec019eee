use std::process::ExitCode;

fn main() -> ExitCode {
    payhub_telemetry::run_main("webhook-verifier", |shutdown| async move {
        let config = webhook_verifier::Config::from_env(&payhub_telemetry::Env::process())?;
        webhook_verifier::Application::build(config, shutdown)
            .await?
            .run_until_stopped()
            .await
    })
}
