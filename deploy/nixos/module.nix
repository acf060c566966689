# services.slotwatch: run slotwatch as a hardened systemd service on NixOS.
#
# Secrets are files only. systemd copies them into the unit's private credential directory
# (LoadCredential), so the DSN files may stay root-only (e.g. sops-nix's default 0400 root) while
# the service runs as a dynamic, unprivileged user; the Nix store never sees a password.
{ config, lib, pkgs, ... }:

let
  cfg = config.services.slotwatch;
  inherit (lib) mkOption types;

  # RFC 42: free-form settings rendered as slotwatch's TOML file (docs/contract.md §6), e.g. several
  # [[targets]]. Secrets stay files: each target's dsn_file / admin_dsn_file is handed to the unit
  # with LoadCredential and the rendered file names the credential, never the secret itself.
  settingsFormat = pkgs.formats.toml { };
  credentialDir = "/run/credentials/slotwatch.service";
  secretFiles = { dsn_file = "dsn"; admin_dsn_file = "admin-dsn"; };
  targets = cfg.settings.targets or [ ];
  secretKeysOf = target: builtins.filter (key: target ? ${key}) (builtins.attrNames secretFiles);
  credentialName = target: key: "${target.name}-${secretFiles.${key}}";
  targetCredentials = builtins.concatMap
    (target: map (key: "${credentialName target key}:${toString target.${key}}") (secretKeysOf target))
    targets;
  renderTarget = target: target // builtins.listToAttrs (map
    (key: { name = key; value = "${credentialDir}/${credentialName target key}"; })
    (secretKeysOf target));
  rendered = cfg.settings // (if targets != [ ] then { targets = map renderTarget targets; } else { });
  configFile = settingsFormat.generate "slotwatch.toml" rendered;
  # Inline secrets anywhere in settings would land in the world-readable store.
  inlineSecrets = builtins.filter (key: cfg.settings ? ${key}) [ "dsn" "admin_dsn" ]
    ++ builtins.concatMap (target: builtins.filter (key: target ? ${key}) [ "dsn" "admin_dsn" ]) targets;
  wildcards = [ "" "0.0.0.0" "::" "[::]" ];

  duration = types.either types.ints.unsigned types.str;
  size = types.either types.ints.unsigned types.str;
  inStore = path: lib.hasPrefix builtins.storeDir (toString path);

  # Settings whose value is null are left to slotwatch's own defaults (docs/contract.md §6); the rest become
  # strings, since systemd.services.<name>.environment takes no integers.
  environment = lib.mapAttrs (_: toString) (lib.filterAttrs (_: v: v != null) ({
    SLOTWATCH_CONFIG = if cfg.settings != { } then configFile else null;
    SLOTWATCH_DSN_FILE = if cfg.dsnFile != null then "%d/dsn" else null;
    SLOTWATCH_ADMIN_DSN_FILE = if cfg.adminDsnFile != null then "%d/admin-dsn" else null;
    SLOTWATCH_LISTEN = "${cfg.listenAddress}:${toString cfg.port}";
    # With [[targets]] in the file each target names itself; slotwatch refuses this variable then.
    SLOTWATCH_TARGET_NAME = if targets == [ ] then cfg.targetName else null;
    SLOTWATCH_SLOT_PATTERN = cfg.slotPattern;
    SLOTWATCH_LIVENESS_URL = cfg.livenessUrl;
    SLOTWATCH_POLL_INTERVAL = cfg.pollInterval;
    SLOTWATCH_STALL_AFTER = cfg.stallAfter;
    SLOTWATCH_INACTIVE_AFTER = cfg.inactiveAfter;
    SLOTWATCH_LAG_FLOOR_BYTES = cfg.lagFloorBytes;
    SLOTWATCH_LAG_WARN_BYTES = cfg.lagWarnBytes;
    SLOTWATCH_AT_RISK_ETA = cfg.atRiskEta;
    SLOTWATCH_WAL_BUDGET_BYTES = cfg.walBudgetBytes;
    SLOTWATCH_LOG_FORMAT = "json";
  } // cfg.extraEnvironment));
in
{
  options.services.slotwatch = {
    enable = lib.mkEnableOption "slotwatch, the watchdog for PowerSync's logical replication slots";

    package = mkOption {
      type = types.package;
      description = ''
        The slotwatch package. slotwatch is not in nixpkgs; build it from its source with
        `python3Packages.buildPythonApplication` (see example.nix).
      '';
    };

    dsnFile = mkOption {
      type = types.nullOr types.path;
      default = null;
      example = "/run/secrets/slotwatch-dsn";
      description = ''
        File holding the monitoring role's libpq URI or key=value string (SLOTWATCH_DSN), e.g. a
        sops-nix secret. Read by systemd as root and handed to the service via LoadCredential, so
        it can stay root-only. Give a string path: a Nix path literal is copied into the store.
        Required unless `settings.targets` lists the targets (each with its own dsn_file).
      '';
    };

    settings = mkOption {
      type = settingsFormat.type;
      default = { };
      example = {
        poll_interval = "15s";
        targets = [
          { name = "prod"; dsn_file = "/run/secrets/slotwatch/prod-dsn"; }
          { name = "staging"; dsn_file = "/run/secrets/slotwatch/staging-dsn"; wal_budget_bytes = "8GiB"; }
        ];
      };
      description = ''
        slotwatch's TOML configuration (docs/contract.md §6: lower-case keys without the SLOTWATCH_ prefix, and
        `targets`), rendered with pkgs.formats.toml into the store and passed as SLOTWATCH_CONFIG.
        Each target's `dsn_file` and `admin_dsn_file` are read by systemd (LoadCredential) and the
        rendered file points at the credential copies, so the secret files may stay root-only.
        Never put `dsn` or `admin_dsn` here: evaluation fails, they would land in the store.
      '';
    };

    dsn = mkOption {
      type = types.nullOr types.str;
      default = null;
      visible = false;
      description = ''
        Not supported: an inline DSN carries a password into the world-readable Nix store.
        Setting it fails evaluation with a pointer to dsnFile.
      '';
    };

    adminDsnFile = mkOption {
      type = types.nullOr types.path;
      default = null;
      description = ''
        File holding the drop role's DSN (SLOTWATCH_ADMIN_DSN: REPLICATION + pg_signal_backend),
        used only by `slotwatch drop`. Leave unset unless operators drop slots through this host.
      '';
    };

    targetName = mkOption {
      type = types.str;
      default = "default";
      description = "The `target` label of every metric.";
    };

    slotPattern = mkOption {
      type = types.str;
      default = "powersync_selfhost%";
      description = "Slots to watch; `%` is the only wildcard, `_` matches itself.";
    };

    livenessUrl = mkOption {
      type = types.str;
      default = "http://127.0.0.1:8080/probes/liveness";
      description = "PowerSync's liveness URL; the empty string disables the probe.";
    };

    listenAddress = mkOption {
      type = types.str;
      default = "127.0.0.1";
      example = "[::1]";
      description = "Address of /metrics, /healthz and /status. Keep it on loopback.";
    };

    port = mkOption {
      type = types.port;
      default = 9847;
      description = "Port of /metrics, /healthz and /status.";
    };

    pollInterval = mkOption { type = types.nullOr duration; default = null; example = "15s"; description = "SLOTWATCH_POLL_INTERVAL; null keeps slotwatch's default (15s)."; };
    stallAfter = mkOption { type = types.nullOr duration; default = null; example = "5m"; description = "SLOTWATCH_STALL_AFTER (wedged); null keeps the default (5m)."; };
    inactiveAfter = mkOption { type = types.nullOr duration; default = null; example = "2m"; description = "SLOTWATCH_INACTIVE_AFTER; null keeps the default (2m)."; };
    lagFloorBytes = mkOption { type = types.nullOr size; default = null; example = "1MiB"; description = "SLOTWATCH_LAG_FLOOR_BYTES; null keeps the default (1MiB)."; };
    lagWarnBytes = mkOption { type = types.nullOr size; default = null; example = "256MiB"; description = "SLOTWATCH_LAG_WARN_BYTES (lagging); null keeps the default (256MiB)."; };
    atRiskEta = mkOption { type = types.nullOr duration; default = null; example = "1h"; description = "SLOTWATCH_AT_RISK_ETA; null keeps the default (1h)."; };
    walBudgetBytes = mkOption { type = types.nullOr size; default = null; example = "4GiB"; description = "SLOTWATCH_WAL_BUDGET_BYTES, the budget when max_slot_wal_keep_size = -1."; };

    extraEnvironment = mkOption {
      type = types.attrsOf types.str;
      default = { };
      example = { SLOTWATCH_LOG_LEVEL = "debug"; SLOTWATCH_PROBE_TIMEOUT = "3s"; };
      description = ''
        More SLOTWATCH_* variables (docs/contract.md §6). Never put a secret here: it lands in the unit file
        in the Nix store. slotwatch rejects unknown SLOTWATCH_* names, so a typo fails at start.
      '';
    };

    openFirewall = mkOption {
      type = types.bool;
      default = false;
      description = ''
        Open `port` in the firewall, for a scraper on another host. Without `firewallFilter`
        it opens the port on every interface (and says so in a warning).
      '';
    };

    firewallFilter = mkOption {
      type = types.nullOr types.str;
      default = null;
      example = "-i wg0 -s 10.0.0.5 -p tcp -m tcp --dport 9847";
      description = ''
        With `openFirewall`, the iptables match that admits scrapers (as nixpkgs'
        services.prometheus.exporters.*.firewallFilter): scope it to the scraper's interface or
        address, since /status is unauthenticated.
      '';
    };
  };

  config = lib.mkIf cfg.enable {
    assertions = [
      {
        assertion = cfg.dsn == null;
        message = ''
          services.slotwatch.dsn would put the database password into the world-readable Nix
          store. Use services.slotwatch.dsnFile (e.g. config.sops.secrets."slotwatch-dsn".path).
        '';
      }
      {
        assertion = !(builtins.elem cfg.listenAddress wildcards) || cfg.openFirewall;
        message = ''
          services.slotwatch.listenAddress ${cfg.listenAddress} exposes /status on every interface;
          set openFirewall = true (scoped with firewallFilter) to confirm, or keep 127.0.0.1.
        '';
      }
      {
        assertion = (cfg.dsnFile != null) != (targets != [ ]);
        message = ''
          services.slotwatch: give either dsnFile (one target) or settings.targets (each with its
          own dsn_file), not both and not neither.
        '';
      }
      {
        assertion = builtins.all (target: target ? name) targets;
        message = "services.slotwatch.settings.targets: every target needs a name (the `target` label).";
      }
      {
        assertion = inlineSecrets == [ ];
        message = ''
          services.slotwatch.settings holds ${builtins.concatStringsSep ", " inlineSecrets}: that
          password would land in the world-readable Nix store. Use dsn_file / admin_dsn_file.
        '';
      }
    ];

    # Same wording as nixpkgs' exporters: a secret file that is a store path is readable by all.
    warnings =
      lib.optional (cfg.dsnFile != null && inStore cfg.dsnFile)
        "services.slotwatch.dsnFile points into the Nix store (${toString cfg.dsnFile}); its password is world-readable. Use a string path outside the store."
      ++ lib.optional (cfg.adminDsnFile != null && inStore cfg.adminDsnFile)
        "services.slotwatch.adminDsnFile points into the Nix store; its password is world-readable."
      ++ lib.optional (cfg.openFirewall && cfg.firewallFilter == null)
        "services.slotwatch.openFirewall opens port ${toString cfg.port} on every interface; scope it with services.slotwatch.firewallFilter.";

    networking.firewall.allowedTCPPorts = lib.mkIf (cfg.openFirewall && cfg.firewallFilter == null) [ cfg.port ];
    networking.firewall.extraCommands = lib.mkIf (cfg.openFirewall && cfg.firewallFilter != null) ''
      ip46tables -A nixos-fw ${toString cfg.firewallFilter} -m comment --comment slotwatch -j nixos-fw-accept
    '';

    systemd.services.slotwatch = {
      description = "slotwatch: PowerSync replication slot watchdog";
      documentation = [ "https://github.com/slotwatch/slotwatch#readme" ];
      wantedBy = [ "multi-user.target" ];
      wants = [ "network-online.target" ];
      after = [ "network-online.target" ];
      inherit environment;

      serviceConfig = {
        ExecStart = "${lib.getExe cfg.package} run";
        Restart = "on-failure";
        RestartSec = "5s";
        # 78: a configuration error, which a restart cannot fix (docs/contract.md §5).
        RestartPreventExitStatus = 78;
        # slotwatch finishes the poll in flight (bounded by its statement timeout) on SIGTERM.
        KillSignal = "SIGTERM";
        TimeoutStopSec = "30s";

        LoadCredential =
          lib.optional (cfg.dsnFile != null) "dsn:${toString cfg.dsnFile}"
          ++ lib.optional (cfg.adminDsnFile != null) "admin-dsn:${toString cfg.adminDsnFile}"
          ++ targetCredentials;

        # Bounds: ~60 MB resident in a soak; the HTTP server holds at most its worker pool plus
        # ~1,100 idle connections (one fd each), beside one connection per target and the logs.
        MemoryMax = "256M";
        TasksMax = 256;
        LimitNOFILE = 4096;

        DynamicUser = true;
        ProtectSystem = "strict";
        ProtectHome = true;
        PrivateTmp = true;
        PrivateDevices = true;
        PrivateUsers = true;
        NoNewPrivileges = true;
        CapabilityBoundingSet = "";
        AmbientCapabilities = "";
        # AF_INET6: Supabase's direct endpoint (the only one that serves replication) is IPv6-only.
        # AF_UNIX: a local PostgreSQL socket.
        RestrictAddressFamilies = [ "AF_INET" "AF_INET6" "AF_UNIX" ];
        RestrictNamespaces = true;
        RestrictRealtime = true;
        RestrictSUIDSGID = true;
        LockPersonality = true;
        MemoryDenyWriteExecute = true;
        ProtectClock = true;
        ProtectControlGroups = true;
        ProtectHostname = true;
        ProtectKernelLogs = true;
        ProtectKernelModules = true;
        ProtectKernelTunables = true;
        ProtectProc = "invisible";
        ProcSubset = "pid";
        RemoveIPC = true;
        SystemCallArchitectures = "native";
        SystemCallFilter = [ "@system-service" "~@privileged @resources" ];
        UMask = "0077";
      };
    };
  };
}
