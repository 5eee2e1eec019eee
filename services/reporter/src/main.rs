use std::process::ExitCode;

fn main() -> ExitCode {
    payhub_telemetry::run_main("reporter", |shutdown| async move {
        let config = reporter::Config::from_env(&payhub_telemetry::Env::process())?;
        reporter::Application::build(config, shutdown)
            .await?
            .run_until_stopped()
            .await
    })
}
