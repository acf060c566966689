# Example: slotwatch beside a self-hosted PowerSync on a NixOS host that runs PowerSync as a
# podman container, keeps secrets in sops-nix and scrapes with VictoriaMetrics.
# Import it from your configuration.nix next to sops-nix's module; adjust the names.
{ config, pkgs, ... }:

let
  slotwatch = pkgs.python311Packages.buildPythonApplication {
    pname = "slotwatch";
    version = "0.1.0";
    pyproject = true;
    src = ../..;
    build-system = [ pkgs.python311Packages.setuptools ];
    dependencies = with pkgs.python311Packages; [
      psycopg
      prometheus-client
      apscheduler
      httpx
      structlog
      pydantic
      pydantic-settings
    ];
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
