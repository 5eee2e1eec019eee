use std::process::ExitCode;

fn main() -> ExitCode {
    payhub_telemetry::run_main("charge-creator", |shutdown| async move {
        let config = charge_creator::Config::from_env(&payhub_telemetry::Env::process())?;
        charge_creator::Application::build(config, shutdown)
            .await?
            .run_until_stopped()
            .await
    })
}
