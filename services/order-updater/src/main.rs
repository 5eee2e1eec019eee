use std::process::ExitCode;

fn main() -> ExitCode {
    payhub_telemetry::run_main("order-updater", |shutdown| async move {
        let config = order_updater::Config::from_env(&payhub_telemetry::Env::process())?;
        order_updater::Application::build(config, shutdown)
            .await?
            .run_until_stopped()
            .await
    })
}
