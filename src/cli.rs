//! Command line: `render` and `serve`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::translate::Options;

#[derive(Debug, Parser)]
#[command(
    name = "knative-pilot",
    version,
    about = "xDS control plane for Knative gateways"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print one gateway's config as Envoy admin /config_dump JSON (or YAML).
    Render(RenderArgs),
    /// Serve ADS (SotW and Delta) to Envoy gateways, following changes to the inputs.
    Serve(ServeArgs),
    /// Start a working demo on this machine: seed services, echo backends, server, and both
    /// gateways when stock Envoy is installed.
    Demo(crate::demo::DemoArgs),
    /// Write a synthetic Knative cluster of N services as a manifest directory (for benchmarks).
    Synth(SynthArgs),
}

#[derive(Debug, Clone, Args)]
pub struct SynthArgs {
    /// Number of Knative services.
    #[arg(long, default_value_t = 1000)]
    pub services: usize,
    /// Directory to write (created if missing).
    #[arg(long)]
    pub out: std::path::PathBuf,
    /// How the traffic of each service is given.
    #[arg(long = "as", value_enum, default_value_t = crate::synth::Form::Route)]
    pub form: crate::synth::Form,
}

/// Translation settings shared by every command.
#[derive(Debug, Clone, Args)]
pub struct TranslateArgs {
    /// KIngress class we translate (annotation networking.knative.dev/ingress.class).
    #[arg(long, default_value = crate::model::kingress::DEFAULT_CLASS)]
    pub ingress_class: String,
    /// Gateway (ns/name) that serves ExternalIP rules of KIngresses and Routes.
    #[arg(long, default_value = "knative-serving/knative-ingress-gateway")]
    pub external_gateway: String,
    /// Gateway (ns/name) that serves ClusterLocal rules.
    #[arg(long, default_value = "knative-serving/cluster-local-gateway")]
    pub local_gateway: String,
    /// Address gateway listeners bind to when a Gateway server names no `bind`.
    #[arg(long, default_value = "0.0.0.0")]
    pub bind_address: String,
    /// Kubernetes cluster domain.
    #[arg(long, default_value = "cluster.local")]
    pub cluster_domain: String,
}

impl TranslateArgs {
    pub fn options(&self) -> Options {
        Options {
            ingress_class: self.ingress_class.clone(),
            external_gateway: self.external_gateway.clone(),
            local_gateway: self.local_gateway.clone(),
            bind_address: self.bind_address.clone(),
            cluster_domain: self.cluster_domain.clone(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Json,
    Yaml,
}

#[derive(Debug, Args)]
pub struct RenderArgs {
    /// Directory of manifests (*.yaml, *.yml, *.json, recursively).
    #[arg(long)]
    pub from: PathBuf,
    /// Gateway to render: ns/name, or `external` / `local`.
    #[arg(long, default_value = "external")]
    pub gateway: String,
    #[arg(long, value_enum, default_value = "json")]
    pub format: Format,
    #[command(flatten)]
    pub translate: TranslateArgs,
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Directory of manifests to serve and watch.
    #[arg(long)]
    pub from: PathBuf,
    /// ADS gRPC address (plaintext, like istiod's 15010).
    #[arg(long, default_value = "0.0.0.0:15010")]
    pub xds_addr: String,
    /// Debug HTTP address: /healthz, /ready, /debug/*.
    #[arg(long, default_value = "127.0.0.1:15014")]
    pub debug_addr: String,
    /// Quiet time after the last change before pushing.
    #[arg(long, value_parser = parse_duration, default_value = "100ms")]
    pub debounce_after: Duration,
    /// Longest a burst of changes may delay a push.
    #[arg(long, value_parser = parse_duration, default_value = "1s")]
    pub debounce_max: Duration,
    /// Log format.
    #[arg(long, value_enum, default_value = "text")]
    pub log_format: LogFormat,
    #[command(flatten)]
    pub translate: TranslateArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// `100ms`, `1s`, `2m`, or plain milliseconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, mult) = if let Some(n) = s.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1000.0)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60_000.0)
    } else {
        (s, 1.0)
    };
    let v: f64 = num.parse().map_err(|_| format!("bad duration {s:?}"))?;
    if !v.is_finite() || v < 0.0 {
        return Err(format!("bad duration {s:?}"));
    }
    Ok(Duration::from_secs_f64(v * mult / 1000.0))
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Synth(args) => {
            let synth = crate::synth::Synth::new(args.services, args.form);
            match synth.write_dir(&args.out) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: writing {}: {e}", args.out.display());
                    ExitCode::FAILURE
                }
            }
        }
        Command::Render(args) => {
            init_logging(LogFormat::Text);
            render(&args)
        }
        Command::Demo(args) => {
            init_logging(LogFormat::Text);
            match crate::demo::run_blocking(args) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("knative-pilot demo: {e:#}");
                    ExitCode::from(2)
                }
            }
        }
        Command::Serve(args) => {
            init_logging(args.log_format);
            match crate::serve::run_blocking(args) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("knative-pilot serve: {e:#}");
                    ExitCode::from(2)
                }
            }
        }
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

fn render(args: &RenderArgs) -> ExitCode {
    let opts = args.translate.options();
    if !args.from.is_dir() {
        eprintln!(
            "knative-pilot render: --from {} is not a directory",
            args.from.display()
        );
        return ExitCode::from(2);
    }
    let (inputs, mut errors) = crate::pipeline::load(&args.from);
    let rendered = match crate::pipeline::render_gateway(&inputs, &opts, &args.gateway) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("knative-pilot render: {e}");
            return ExitCode::from(2);
        }
    };
    errors.extend(rendered.errors.iter().cloned());
    errors.sort();
    errors.dedup();
    let dump = match crate::dump::config_dump(&rendered.snapshot) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("knative-pilot render: {e}");
            return ExitCode::from(2);
        }
    };
    let text = match args.format {
        Format::Json => serde_json::to_string_pretty(&dump)
            .map(|s| s + "\n")
            .map_err(|e| e.to_string()),
        Format::Yaml => serde_yaml::to_string(&dump).map_err(|e| e.to_string()),
    };
    match text {
        Ok(t) => print!("{t}"),
        Err(e) => {
            eprintln!("knative-pilot render: {e}");
            return ExitCode::from(2);
        }
    }
    for e in &errors {
        eprintln!("error: {e}");
    }
    if !errors.is_empty() {
        eprintln!("knative-pilot render: {} problem(s); the objects named were left out, everything else rendered", errors.len());
    }
    if errors.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
