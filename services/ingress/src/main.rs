use std::process::ExitCode;

fn main() -> ExitCode {
    payhub_telemetry::run_main("ingress", |shutdown| async move {
        let config = ingress::Config::from_env(&payhub_telemetry::Env::process())?;
        ingress::Application::build(config, shutdown)
            .await?
            .run_until_stopped()
            .await
    })
}
