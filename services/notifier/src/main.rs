use std::process::ExitCode;

fn main() -> ExitCode {
    payhub_telemetry::run_main("notifier", |shutdown| async move {
        let config = notifier::Config::from_env(&payhub_telemetry::Env::process())?;
        notifier::Application::build(config, shutdown)
            .await?
            .run_until_stopped()
            .await
    })
}
