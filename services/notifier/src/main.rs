use std::process::ExitCode;

/// mimalloc (without transparent huge pages) in the notifier only: it renders
/// two PDF receipts per paid order, and glibc's per-thread arenas gave the
/// renderer's large short-lived buffers (deflate state) back to the kernel and
/// faulted them in again (page faults and memset were a tenth of its CPU,
/// issue 14). The other services allocate little: with mimalloc their CPU
/// per order did not measurably change, and in the bench run that had it in
/// all six their peak RSS reached 48-52 MB.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    payhub_telemetry::run_main("notifier", |shutdown| async move {
        let config = notifier::Config::from_env(&payhub_telemetry::Env::process())?;
        notifier::Application::build(config, shutdown)
            .await?
            .run_until_stopped()
            .await
    })
}
