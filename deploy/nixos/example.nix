# Example: slotwatch beside a self-hosted PowerSync on a NixOS host that runs PowerSync as a
# podman container, keeps secrets in sops-nix and scrapes with VictoriaMetrics.
# Import it from your configuration.nix next to sops-nix's module; adjust the names.
{ config, pkgs, ... }:

let
  python3Packages = pkgs.python311Packages;
  slotwatch = python3Packages.buildPythonApplication {
    pname = "slotwatch";
    # The one version source, as pyproject.toml's dynamic version reads it.
    version = builtins.head
      (builtins.match ''.*__version__ = "([^"]+)".*'' (builtins.readFile ../../slotwatch/__init__.py));
    pyproject = true;
    src = ../..;
    build-system = [ python3Packages.setuptools ];
    # pyproject.toml asks for psycopg[binary], the manylinux wheel with its own libpq, which
    # nixpkgs does not ship; psycopg's C implementation below, linked against nixpkgs' libpq, is
    # the same thing built from source. The runtime-dependency check then finds what it asks for.
    postPatch = ''
      substituteInPlace pyproject.toml --replace-fail '"psycopg[binary]' '"psycopg'
    '';
    dependencies = with python3Packages; [
      psycopg
      prometheus-client
      apscheduler
      httpcore
      structlog
      pydantic
      pydantic-settings
    ] ++ python3Packages.psycopg.optional-dependencies.c;
    meta.mainProgram = "slotwatch";
  };
in
{
  imports = [
    ./module.nix
    ../victoriametrics/nixos.nix
  ];

  # sops-nix: files under /run/secrets, root-only. systemd's LoadCredential reads them as root,
  # so slotwatch's dynamic user never needs to own them.
  sops.secrets."slotwatch/dsn" = { };
  sops.secrets."slotwatch/admin-dsn" = { };
  # Contents, e.g.:
  #   host=db.<ref>.supabase.co port=5432 dbname=postgres user=slotwatch password=...
  #   sslmode=verify-full sslrootcert=/etc/ssl/supabase/prod-ca-2021.crt
  # (the direct endpoint: IPv6-only, the only one that carries replication)

  services.slotwatch = {
    enable = true;
    package = slotwatch;
    dsnFile = config.sops.secrets."slotwatch/dsn".path;
    adminDsnFile = config.sops.secrets."slotwatch/admin-dsn".path;
    slotPattern = "powersync_selfhost%";
    livenessUrl = "http://127.0.0.1:8080/probes/liveness";
    listenAddress = "127.0.0.1";
    port = 9847;
    stallAfter = "5m";
    inactiveAfter = "2m";
    extraEnvironment.SLOTWATCH_LOG_LEVEL = "info";
    # Several databases instead: drop dsnFile/adminDsnFile above and list them (RFC 42 settings,
    # rendered as slotwatch's TOML; each dsn_file is read by systemd, never copied to the store):
    #   settings.targets = [
    #     { name = "prod"; dsn_file = config.sops.secrets."slotwatch/prod-dsn".path; }
    #     { name = "staging"; dsn_file = config.sops.secrets."slotwatch/staging-dsn".path; }
    #   ];
  };

  # The CA named in the DSN (download prod-ca-2021.crt from the Supabase dashboard and keep it next
  # to this file). ProtectSystem=strict leaves /etc readable, so the service needs nothing more.
  environment.etc."ssl/supabase/prod-ca-2021.crt".source = ./prod-ca-2021.crt;

  # PowerSync itself, as it already runs on this host.
  virtualisation.podman.enable = true;
  virtualisation.oci-containers.backend = "podman";
  virtualisation.oci-containers.containers.powersync = {
    image = "docker.io/journeyapps/powersync-service:1.25";
    cmd = [ "start" "-r" "unified" ];
    ports = [ "127.0.0.1:8080:8080" ];
    environmentFiles = [ config.sops.templates."powersync.env".path ];
    volumes = [ "/etc/powersync/config.yaml:/config/config.yaml:ro" ];
  };
  sops.templates."powersync.env".content = ''
    POWERSYNC_CONFIG_PATH=/config/config.yaml
    PS_DATA_SOURCE_URI=${config.sops.placeholder."powersync/source-uri"}
  '';
  sops.secrets."powersync/source-uri" = { };

  # Start after PowerSync so the first liveness probe does not report a container still booting.
  systemd.services.slotwatch.after = [ "podman-powersync.service" ];

  # VictoriaMetrics scrapes slotwatch on loopback (job "slotwatch", which the alert rules expect),
  # vmalert evaluates the shipped rules: see ../victoriametrics/nixos.nix, imported above.
}
