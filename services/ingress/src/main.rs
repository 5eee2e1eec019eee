use std::process::ExitCode;

fn main() -> ExitCode {
    payhub_telemetry::run_main("ingress", |shutdown| async move {
        let env = payhub_telemetry::Env::process();
        let config = ingress::Config::from_env(&env)?;
        let options = ingress::Options::from_env(&env)?;
        ingress::Application::build_with(config, options, shutdown)
            .await?
            .run_until_stopped()
            .await
    })
}
