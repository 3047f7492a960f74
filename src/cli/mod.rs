//! Command line: `render`, `serve`, `demo`, `diff`, `validate`, `proxy-status`,
//! `proxy-config`, `synth`, `version` and `completion`. Only this module knows clap: each
//! command turns its flags into plain configuration once. Exit codes: 0 success, 1 a finding
//! (differences, errors, objects left out), 2 a usage or I/O error (stdout included).

pub mod demo;
pub mod proxy;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::translate::Options;

pub mod serve_args;

pub use serve_args::{ServeArgs, StatusArgs, XdsAuthArgs};

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
    Serve(Box<ServeArgs>),
    /// Start a working demo on this machine: seed services, echo backends, server, and both
    /// gateways when stock Envoy is installed.
    Demo(crate::cli::demo::DemoArgs),
    /// Compare two xDS configurations (Envoy/istiod config dumps, `render` output, or a
    /// manifest directory with --from) resource by resource. Exit 0 equal, 1 different, 2 error.
    Diff(DiffArgs),
    /// Find problems in the objects (like `istioctl analyze`): each with kind ns/name, file and
    /// document, and a one-line fix. Exit 0 when there is no error (warnings allowed), 1 when
    /// there are errors, 2 on a usage or I/O error.
    Validate(ValidateArgs),
    /// Show each connected Envoy's sync state per xDS type (like `istioctl proxy-status`),
    /// read from a running server's debug endpoints.
    ProxyStatus(proxy::ProxyStatusArgs),
    /// Show what one connected Envoy was sent (like `istioctl proxy-config`): clusters,
    /// listeners, routes, endpoints or secrets (never their keys).
    ProxyConfig(proxy::ProxyConfigArgs),
    /// Write a synthetic Knative cluster of N services as a manifest directory (for benchmarks).
    Synth(SynthArgs),
    /// Print the version (as --version), and the Envoy version it is tested with.
    Version,
    /// Print a shell completion script: `source <(knative-pilot completion bash)`.
    Completion {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
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
    #[arg(long = "as", value_enum, default_value_t = FormArg::Route)]
    pub form: FormArg,
}

/// `synth --as` values ([`crate::tools::synth::Form`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FormArg {
    /// Knative Routes (with status), translated through the KIngress Knative would build.
    Route,
    /// KIngresses of our class.
    Kingress,
    /// VirtualServices as net-istio writes them for a KIngress.
    Virtualservice,
    /// Gateway API HTTPRoutes as net-gateway-api writes them (with our GatewayClass and its
    /// two Gateways).
    Httproute,
}

impl From<FormArg> for crate::tools::synth::Form {
    fn from(f: FormArg) -> Self {
        use crate::tools::synth::Form;
        match f {
            FormArg::Route => Form::Route,
            FormArg::Kingress => Form::Kingress,
            FormArg::Virtualservice => Form::Virtualservice,
            FormArg::Httproute => Form::Httproute,
        }
    }
}

/// Translation settings shared by every command.
#[derive(Debug, Clone, Args)]
pub struct TranslateArgs {
    /// KIngress class we translate (annotation networking.knative.dev/ingress.class).
    #[arg(long, default_value = crate::model::kingress::DEFAULT_CLASS)]
    pub ingress_class: String,
    /// Gateway (ns/name) that serves ExternalIP rules of KIngresses and Routes [default: the
    /// default external gateway of net-istio's knative-serving/config-istio, else
    /// knative-serving/knative-ingress-gateway].
    #[arg(long)]
    pub external_gateway: Option<String>,
    /// Gateway (ns/name) that serves ClusterLocal rules [default: the default local gateway of
    /// config-istio, else knative-serving/knative-local-gateway when that Gateway exists
    /// (net-istio today), else knative-serving/cluster-local-gateway].
    #[arg(long)]
    pub local_gateway: Option<String>,
    /// Address gateway listeners bind to when a Gateway server names no `bind`.
    #[arg(long, default_value = "0.0.0.0")]
    pub bind_address: String,
    /// Kubernetes cluster domain.
    #[arg(long, default_value = "cluster.local")]
    pub cluster_domain: String,
    /// Route layout of plain-HTTP listeners: `istio` (one RouteConfiguration per port, as
    /// istiod) or `scoped` (scoped RDS: one scope and RouteConfiguration per host, so a change
    /// to one service resends only its own; wildcard hosts are not served) or `on-demand` (the
    /// scoped layout, which the gateway Envoy learns per host and cluster when a request first
    /// needs them: Envoy's on-demand filter; needs Delta ADS, see README "On-demand layout").
    #[arg(long, value_enum, default_value = "istio")]
    pub route_layout: RouteLayoutArg,
    /// Gateway API: the `spec.controllerName` of the GatewayClasses we serve (Gateways of other
    /// classes are not served).
    #[arg(long, default_value = crate::model::gateway_api::DEFAULT_CONTROLLER)]
    pub gateway_controller: String,
}

/// `--route-layout` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RouteLayoutArg {
    Istio,
    Scoped,
    OnDemand,
}

impl TranslateArgs {
    pub fn options(&self) -> Options {
        Options {
            ingress_class: self.ingress_class.clone(),
            external_gateway: self.external_gateway.clone(),
            local_gateway: self.local_gateway.clone(),
            bind_address: self.bind_address.clone(),
            cluster_domain: self.cluster_domain.clone(),
            gateway_controller: self.gateway_controller.clone(),
            route_layout: match self.route_layout {
                RouteLayoutArg::Istio => crate::translate::RouteLayout::Istio,
                RouteLayoutArg::Scoped => crate::translate::RouteLayout::Scoped,
                RouteLayoutArg::OnDemand => crate::translate::RouteLayout::OnDemand,
            },
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DiffOutput {
    /// `paths`, followed by `unified` with colors when stdout is a terminal.
    Auto,
    /// One line per differing resource with the changed field paths and both values.
    Paths,
    /// Unified diff of the normalised YAML of each differing resource.
    Unified,
    /// The differences as JSON.
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ColorWhen {
    Auto,
    Always,
    Never,
}

#[derive(Debug, Args)]
pub struct DiffArgs {
    /// Config dumps A and B (JSON or YAML; `-` reads stdin). With --from, only A: B is then
    /// rendered from the manifests.
    #[arg(value_name = "DUMP", num_args = 1..=2)]
    pub dumps: Vec<PathBuf>,
    /// Render side B from this manifest directory.
    #[arg(long)]
    pub from: Option<PathBuf>,
    /// With --from: the gateway to render (ns/name, `external` or `local`).
    #[arg(long, default_value = "external")]
    pub gateway: String,
    /// Also compare static (bootstrap) resources.
    #[arg(long)]
    pub keep_static: bool,
    /// Ignore fields: `[KIND:]name.name` matched against the end of a field path, `*` for any
    /// one name (e.g. `stat_prefix`, `metadata.filter_metadata.istio`, `cluster:circuit_breakers`).
    #[arg(long = "ignore", value_name = "PATTERN")]
    pub ignore: Vec<crate::tools::diff::Pattern>,
    /// Leave out resources: `[KIND:]NAME` with `*` wildcards (repeatable), e.g. istiod's
    /// clusters of other namespaces: `cluster:outbound|*||*.kube-system.svc.cluster.local`.
    #[arg(long = "skip", value_name = "PATTERN")]
    pub skip: Vec<crate::tools::diff::Skip>,
    /// Compare only these kinds (repeatable): listener, route_config, virtual_host, cluster,
    /// endpoints, secret. Without it, when a side is a bare list of resources (istioctl
    /// proxy-config cluster|listener|route -o json), only the kinds that list holds.
    #[arg(long = "kind", value_name = "KIND")]
    pub kinds: Vec<String>,
    #[arg(long, short = 'o', value_enum, default_value = "auto")]
    pub output: DiffOutput,
    #[arg(long, value_enum, default_value = "auto")]
    pub color: ColorWhen,
    #[command(flatten)]
    pub translate: TranslateArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ValidateOutput {
    Text,
    Json,
}

#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// Directory of manifests (*.yaml, *.yml, *.json, recursively).
    #[arg(long, required_unless_present = "kube", conflicts_with = "kube")]
    pub from: Option<PathBuf>,
    /// Read the objects from the Kubernetes API instead (one list of everything `serve --kube`
    /// watches; kubeconfig or in-cluster config, as kube-rs resolves it).
    #[arg(long)]
    pub kube: bool,
    /// With --kube: only these namespaces (repeat or comma-separate; default all).
    #[arg(long, value_delimiter = ',')]
    pub namespace: Vec<String>,
    /// With --kube: give up when the lists have not completed after this long.
    #[arg(long, value_parser = parse_duration, default_value = "60s")]
    pub timeout: Duration,
    #[arg(long, short = 'o', value_enum, default_value = "text")]
    pub output: ValidateOutput,
    #[command(flatten)]
    pub translate: TranslateArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// `100ms`, `1s`, `2m` (Go duration syntax, [`crate::model::duration`]), or plain
/// milliseconds.
pub fn parse_duration(s: &str) -> Result<Duration, crate::model::duration::DurationError> {
    crate::model::duration::parse_cli(s)
}

pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // Usage errors: clap's message on stderr, exit 2.
        Err(e) if e.use_stderr() => e.exit(),
        // --help and --version: on stdout, a failed write exits 2 like every command's.
        Err(e) => {
            let flag = match e.kind() {
                clap::error::ErrorKind::DisplayVersion => "--version",
                _ => "--help",
            };
            let text = if std::io::IsTerminal::is_terminal(&std::io::stdout()) {
                e.render().ansi().to_string()
            } else {
                e.render().to_string()
            };
            return emit(flag, &text);
        }
    };
    match cli.command {
        Command::Synth(args) => {
            let synth = crate::tools::synth::Synth::new(args.services, args.form.into());
            match synth.write_dir(&args.out) {
                Ok(()) => emit(
                    "synth",
                    &format!(
                        "wrote {} services ({} objects) to {}\n",
                        args.services,
                        synth.inputs().len(),
                        args.out.display()
                    ),
                ),
                Err(e) => {
                    eprintln!("knative-pilot synth: writing {}: {e}", args.out.display());
                    ExitCode::from(2)
                }
            }
        }
        Command::Version => emit(
            "version",
            &format!(
                "knative-pilot {} (tested with Envoy {})\n",
                env!("CARGO_PKG_VERSION"),
                crate::tools::envoy_bin::ENVOY_VERSION
            ),
        ),
        Command::Completion { shell } => {
            use clap::CommandFactory;
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "knative-pilot", &mut script);
            emit("completion", &String::from_utf8_lossy(&script))
        }
        Command::ProxyStatus(args) => proxy::proxy_status(&args),
        Command::ProxyConfig(args) => proxy::proxy_config(&args),
        Command::Render(args) => {
            init_logging(LogFormat::Text);
            render(&args)
        }
        Command::Demo(args) => {
            init_logging(LogFormat::Text);
            match crate::cli::demo::run_blocking(args) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("knative-pilot demo: {e:#}");
                    ExitCode::from(2)
                }
            }
        }
        Command::Validate(args) => {
            init_logging(LogFormat::Text);
            validate(&args)
        }
        Command::Diff(args) => {
            init_logging(LogFormat::Text);
            diff(&args)
        }
        Command::Serve(args) => {
            init_logging(args.log_format);
            match args.config().and_then(crate::runtime::serve::run_blocking) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("knative-pilot serve: {e:#}");
                    ExitCode::from(2)
                }
            }
        }
    }
}

/// Writes `text` to stdout. A write that fails (a full disk, a closed pipe) is an I/O error:
/// exit 2, with a message unless the reader just went away.
fn write_stdout(cmd: &str, text: &str) -> Result<(), ExitCode> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) => {
            if e.kind() != std::io::ErrorKind::BrokenPipe {
                eprintln!("knative-pilot {cmd}: writing stdout: {e}");
            }
            Err(ExitCode::from(2))
        }
    }
}

/// [`write_stdout`], then success.
fn emit(cmd: &str, text: &str) -> ExitCode {
    match write_stdout(cmd, text) {
        Ok(()) => ExitCode::SUCCESS,
        Err(code) => code,
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
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
    drop(inputs);
    errors.extend(rendered.errors.iter().cloned());
    errors.sort();
    errors.dedup();
    // Written resource by resource as it is converted (never the whole dump in memory).
    let stdout = std::io::stdout().lock();
    let written = match args.format {
        Format::Json => crate::xds::dump::write_json(&rendered.snapshot, stdout),
        Format::Yaml => crate::xds::dump::write_yaml(&rendered.snapshot, stdout),
    };
    match written {
        Ok(()) => {}
        Err(crate::xds::dump::DumpError::Io(e)) => {
            if e.kind() != std::io::ErrorKind::BrokenPipe {
                eprintln!("knative-pilot render: writing stdout: {e}");
            }
            return ExitCode::from(2);
        }
        Err(e) => {
            eprintln!("knative-pilot render: {e}");
            return ExitCode::from(2);
        }
    }
    for e in &errors {
        eprintln!("error: {e}");
    }
    if !rendered.routable {
        eprintln!(
            "knative-pilot render: no routable object for gateway {}: every request gets 404 \
             (no VirtualService, KIngress of class {} or Route reaches it)",
            args.gateway, opts.ingress_class
        );
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

fn diff(args: &DiffArgs) -> ExitCode {
    use std::io::IsTerminal;
    let fail = |e: String| {
        eprintln!("knative-pilot diff: {e}");
        ExitCode::from(2)
    };
    let opts = crate::tools::diff::Options {
        keep_static: args.keep_static,
        ignore: args.ignore.clone(),
        skip: args.skip.clone(),
    };
    // Each side is normalised as it is read (never a whole dump in memory).
    let mut sides = match diff_sides(args, &opts) {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    for (label, side) in &sides {
        for note in &side.normalized.notes {
            eprintln!("knative-pilot diff: {label}: {note}");
        }
    }
    let kinds = match diff_kinds(args, &sides) {
        Ok(k) => k,
        Err(e) => return fail(e),
    };
    let mut norm: Vec<crate::tools::diff::Resources> = sides
        .iter_mut()
        .map(|(_, side)| std::mem::take(&mut side.normalized.resources))
        .collect();
    if let Some(kinds) = kinds {
        for n in norm.iter_mut() {
            n.retain(|(k, _), _| kinds.contains(k));
        }
    }
    let (a, b) = (&norm[0], &norm[1]);
    let diffs = crate::tools::diff::compare(a, b);
    let compared = a
        .keys()
        .chain(b.keys())
        .collect::<std::collections::BTreeSet<_>>()
        .len();
    let tty = std::io::stdout().is_terminal();
    let color = match args.color {
        ColorWhen::Always => true,
        ColorWhen::Never => false,
        ColorWhen::Auto => tty,
    };
    let text = match args.output {
        DiffOutput::Json => serde_json::to_string_pretty(&serde_json::json!({
            "a": sides[0].0,
            "b": sides[1].0,
            "equal": diffs.is_empty(),
            "compared": compared,
            "differences": diffs,
        }))
        .map(|s| s + "\n")
        .unwrap_or_default(),
        DiffOutput::Paths => crate::tools::diff::report(&diffs, &sides[0].0, &sides[1].0, compared),
        DiffOutput::Unified => crate::tools::diff::unified(a, b, &diffs, color),
        DiffOutput::Auto => {
            let mut s = crate::tools::diff::report(&diffs, &sides[0].0, &sides[1].0, compared);
            if tty && !diffs.is_empty() {
                s.push('\n');
                s.push_str(&crate::tools::diff::unified(a, b, &diffs, color));
            }
            s
        }
    };
    if let Err(code) = write_stdout("diff", &text) {
        return code;
    }
    if diffs.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// The two sides of `diff`, normalised: the dumps given, or one dump and the config rendered
/// `--from`.
fn diff_sides(
    args: &DiffArgs,
    opts: &crate::tools::diff::Options,
) -> Result<Vec<(String, crate::tools::diff::Side)>, String> {
    let mut sides = Vec::new();
    if args.from.is_some() && args.dumps.len() != 1 {
        return Err("with --from give exactly one config dump (side A)".into());
    }
    if args.from.is_none() && args.dumps.len() != 2 {
        return Err("give two config dumps, or one and --from DIR".into());
    }
    let label = |p: &std::path::PathBuf| p.display().to_string();
    // One pool for the diff: a resource equal on both sides is held as one text.
    let pool = crate::tools::diff::Pool::default();
    let read = |p: &std::path::PathBuf| crate::tools::diff::read_path(p, opts, Some(&pool));
    let stdin = args.dumps.iter().any(|p| p.as_os_str() == "-");
    // The sides are read at once on two threads (each side is one thread's work); errors are
    // reported in the order of the sides. Two dumps of which one is stdin are read one after
    // the other, as before (`diff - -` would otherwise give stdin to whichever thread reads
    // first); a stdin dump against `--from DIR` is read on its own thread.
    std::thread::scope(|scope| {
        match (&args.dumps[..], &args.from) {
            ([a], Some(dir)) => {
                // Side A is read while side B is rendered and read.
                let a_side = scope.spawn(|| read(a));
                let b_side = rendered_side(args, dir).and_then(|(b_label, snapshot, note)| {
                    let side = crate::tools::diff::read_snapshot(&snapshot, opts, Some(&pool));
                    Ok((b_label, side?, note))
                });
                let a_side = a_side
                    .join()
                    .map_err(|_| "reading side A panicked".to_string())??;
                let (b_label, b_side, note) = b_side?;
                if let Some(note) = note {
                    eprintln!("{note}");
                }
                sides.push((label(a), a_side));
                sides.push((b_label, b_side));
            }
            ([a, b], None) if !stdin => {
                let b_side = scope.spawn(|| read(b));
                let a_side = read(a);
                let b_side = b_side
                    .join()
                    .map_err(|_| "reading side B panicked".to_string())?;
                sides.push((label(a), a_side?));
                sides.push((label(b), b_side?));
            }
            (dumps, _) => {
                for p in dumps {
                    sides.push((label(p), read(p)?));
                }
            }
        }
        Ok(sides)
    })
}

/// Side B of `diff --from DIR`, rendered: its label, the gateway's snapshot, and the note about
/// input problems to print once both sides have read.
fn rendered_side(
    args: &DiffArgs,
    dir: &std::path::Path,
) -> Result<(String, crate::xds::Snapshot, Option<String>), String> {
    if !dir.is_dir() {
        return Err(format!("--from {} is not a directory", dir.display()));
    }
    let (inputs, errors) = crate::pipeline::load(dir);
    let rendered =
        crate::pipeline::render_gateway(&inputs, &args.translate.options(), &args.gateway)?;
    drop(inputs);
    let problems = errors.len() + rendered.errors.len();
    let note = (problems > 0).then(|| {
        format!(
            "knative-pilot diff: note: {problems} input problem(s) in {}; the objects named \
             were left out of side B (see `knative-pilot validate`)",
            dir.display()
        )
    });
    Ok((
        format!("render --from {} --gateway {}", dir.display(), args.gateway),
        rendered.snapshot,
        note,
    ))
}

/// The kinds `diff` compares: `--kind`, else the kinds a bare list of resources holds (`None`:
/// every kind).
fn diff_kinds(
    args: &DiffArgs,
    sides: &[(String, crate::tools::diff::Side)],
) -> Result<Option<std::collections::BTreeSet<crate::tools::diff::Kind>>, String> {
    let mut kinds: Option<std::collections::BTreeSet<crate::tools::diff::Kind>> = None;
    for k in &args.kinds {
        let k = k.parse::<crate::tools::diff::Kind>()?;
        kinds.get_or_insert_with(Default::default).insert(k);
    }
    if kinds.is_none() {
        for (label, side) in sides {
            if let Some(held) = &side.list_kinds {
                let names: Vec<&str> = held.iter().map(|k| k.as_str()).collect();
                eprintln!(
                    "knative-pilot diff: {label} is a list of {}: comparing only those",
                    names.join(", ")
                );
                kinds = Some(match kinds {
                    Some(k) => k.intersection(held).copied().collect(),
                    None => held.clone(),
                });
            }
        }
    }
    Ok(kinds)
}

/// `validate --kube`: one list of every watched resource.
fn list_kube(
    args: &ValidateArgs,
) -> anyhow::Result<(Vec<crate::state::Change>, Vec<crate::source::InputError>)> {
    use anyhow::Context;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    rt.block_on(async {
        let client = kube::Client::try_default()
            .await
            .context("--kube: no usable kubeconfig or in-cluster config")?;
        tokio::time::timeout(
            args.timeout,
            crate::source::kube::list_once(client, args.namespace.clone()),
        )
        .await
        .map_err(|_| {
            anyhow::anyhow!(
                "--kube: the lists did not complete within {:?} (see the log for API errors)",
                args.timeout
            )
        })
    })
}

fn validate(args: &ValidateArgs) -> ExitCode {
    let (source, inputs, load_errors) = match &args.from {
        Some(from) => {
            if !from.is_dir() {
                eprintln!(
                    "knative-pilot validate: --from {} is not a directory",
                    from.display()
                );
                return ExitCode::from(2);
            }
            let loaded = crate::source::files::load_dir(from);
            let (inputs, mut load_errors) = crate::state::Inputs::from_sourced(loaded.objects);
            load_errors.extend(loaded.errors);
            (from.display().to_string(), inputs, load_errors)
        }
        None => match list_kube(args) {
            Ok((changes, errors)) => {
                let mut inputs = crate::state::Inputs::default();
                inputs.apply(changes);
                ("kube".to_string(), inputs, errors)
            }
            Err(e) => {
                eprintln!("knative-pilot validate: {e:#}");
                return ExitCode::from(2);
            }
        },
    };
    let findings = crate::validate::validate(&inputs, &load_errors, &args.translate.options());
    let (errors, warnings) = crate::validate::counts(&findings);
    match args.output {
        ValidateOutput::Json => {
            let v = serde_json::json!({
                "from": source,
                "objects": inputs.len(),
                "errors": errors,
                "warnings": warnings,
                "findings": findings,
            });
            match serde_json::to_string_pretty(&v) {
                Ok(t) => {
                    if let Err(code) = write_stdout("validate", &(t + "\n")) {
                        return code;
                    }
                }
                Err(e) => {
                    eprintln!("knative-pilot validate: {e}");
                    return ExitCode::from(2);
                }
            }
        }
        ValidateOutput::Text => {
            let mut text = String::new();
            for f in &findings {
                text.push_str(&format!("{f}\n"));
            }
            text.push_str(&format!(
                "{errors} error(s), {warnings} warning(s) in {} object(s) from {}\n",
                inputs.len(),
                source
            ));
            if let Err(code) = write_stdout("validate", &text) {
                return code;
            }
        }
    }
    if errors > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}
