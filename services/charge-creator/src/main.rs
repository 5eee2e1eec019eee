use std::process::ExitCode;

/// mimalloc (without transparent huge pages): the services allocate and free
/// many short-lived buffers; glibc's per-thread arenas gave them back to the
/// kernel and faulted them in again (page faults and memset were a tenth of
/// the notifier's CPU, issue 14).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    payhub_telemetry::run_main("charge-creator", |shutdown| async move {
        let config = charge_creator::Config::from_env(&payhub_telemetry::Env::process())?;
        charge_creator::Application::build(config, shutdown)
            .await?
            .run_until_stopped()
            .await
    })
}
