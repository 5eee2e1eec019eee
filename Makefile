# payhub: the two commands are `make demo` and `make test`.
CARGO ?= cargo
# Tests use their own vhost when rabbitmqctl can make it (see ensure-services.sh).
TEST_AMQP_URL ?= $(shell command -v rabbitmqctl >/dev/null 2>&1 && echo amqp://guest:guest@127.0.0.1:5672/payhub-test || echo amqp://guest:guest@127.0.0.1:5672/%2f)

.PHONY: demo test lint fmt build services migrate audit validate-deploy clean

## Build, migrate, run the six services and the sandbox, walk one order to paid.
demo: services build
	./target/debug/payhub-demo

## Unit and end-to-end tests over the real RabbitMQ and PostgreSQL.
test: services build
	./scripts/ensure-services.sh --test
	PAYHUB_TEST_AMQP_URL=$(TEST_AMQP_URL) $(CARGO) test --workspace --locked
	@# The chaos run restarts RabbitMQ and PostgreSQL: alone, after the rest,
	@# on a fresh test vhost (the suite's leftover queues hold broker file handles).
	./scripts/ensure-services.sh --test
	PAYHUB_TEST_AMQP_URL=$(TEST_AMQP_URL) $(CARGO) test --locked -p payhub-tests --test chaos -- --ignored

## Formatting and lints, as CI runs them.
lint:
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

fmt:
	$(CARGO) fmt --all

build:
	$(CARGO) build --workspace --bins --locked

services:
	./scripts/ensure-services.sh

## Apply migrations to PAYHUB_DATABASE_URL (default: local payhub database).
migrate: build
	./target/debug/payhubctl migrate

## Dependency audit against the RustSec database (offline copy beside the repo if present).
audit:
	@command -v cargo-audit >/dev/null || $(CARGO) install cargo-audit --locked
	@if [ -d ../shared/advisory-db ]; then $(CARGO) audit --db ../shared/advisory-db --no-fetch; else $(CARGO) audit; fi

## Offline checks of deploy/ (compose, Kubernetes, Prometheus, Grafana).
validate-deploy:
	./deploy/validate.sh

clean:
	$(CARGO) clean
	rm -rf .demo

## Throughput and latency under open-model load through the whole pipeline
## (six services + sandbox as processes), every order verified, with the
## machine's RabbitMQ and PostgreSQL ceilings; results in bench-results/<timestamp>/.
## Parameters: make bench BENCH_ARGS="--rate 60 --duration 30 --steps 50,100,200".
.PHONY: bench
bench: services
	$(CARGO) build --release --locked -p payhub-bench -p ingress -p charge-creator -p webhook-verifier -p order-updater -p notifier -p reporter -p payhub-sandbox -p payhubctl
	./target/release/payhub-bench $(BENCH_ARGS)

## Chaos run: two replicas of every service under orders through every door,
## with SIGKILLed services, a RabbitMQ and a PostgreSQL restart and a failing
## shop endpoint on a seeded schedule; every order verified, report in
## bench-results/<timestamp>/chaos.md. Restarts the local RabbitMQ and
## PostgreSQL: run it alone. CHAOS_BUILD=debug uses target/debug (after make build).
## Parameters: make chaos CHAOS_ARGS="--rate 20 --duration 180 --seed 42".
CHAOS_BUILD ?= release
CHAOS_ARGS ?= --rate 15 --duration 90
.PHONY: chaos
chaos: services
	@if [ "$(CHAOS_BUILD)" = release ]; then \
	  $(CARGO) build --release --locked -p payhub-bench -p ingress -p charge-creator -p webhook-verifier -p order-updater -p notifier -p reporter -p payhub-sandbox -p payhubctl; \
	else $(CARGO) build --workspace --bins --locked; fi
	./target/$(CHAOS_BUILD)/payhub-bench --chaos $(CHAOS_ARGS)
