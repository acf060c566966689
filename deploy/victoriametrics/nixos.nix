# NixOS: VictoriaMetrics scrapes slotwatch, vmalert evaluates slotwatch's rules and notifies
# Alertmanager. Import this module next to the one that runs slotwatch; paths are relative to
# this file, so copy deploy/alerts/slotwatch.rules.yml along with it.
#
# Option names as of nixpkgs 24.11 / 25.05:
#   services.victoriametrics.prometheusConfig   -> -promscrape.config (checked at build time)
#   services.vmalert.instances.<name>.settings  -> vmalert command-line flags
# On older releases without prometheusConfig, pass the scrape file instead:
#   services.victoriametrics.extraOptions = [ "-promscrape.config=${./scrape.yml}" ];
{ ... }:
{
  services.victoriametrics = {
    enable = true;
    listenAddress = "127.0.0.1:8428";
    retentionPeriod = "90d";
    # Same content as deploy/victoriametrics/scrape.yml. Add the job to an existing
    # prometheusConfig.scrape_configs list if you already scrape other exporters.
    prometheusConfig.scrape_configs = [
      {
        # SlotwatchDown looks for up{job="slotwatch"}: keep this name.
        job_name = "slotwatch";
        scrape_interval = "15s"; # = SLOTWATCH_POLL_INTERVAL
        scrape_timeout = "10s";
        metrics_path = "/metrics";
        static_configs = [ { targets = [ "127.0.0.1:9847" ]; } ];
      }
    ];
  };

  services.vmalert.instances.slotwatch = {
    enable = true;
    settings = {
      "datasource.url" = "http://127.0.0.1:8428";
      "notifier.url" = [ "http://127.0.0.1:9093" ];
      "evaluationInterval" = "15s";
      # The module adds its own (empty) rules file; ours comes from the repository.
      "rule" = [ ../alerts/slotwatch.rules.yml ];
      "external.url" = "http://127.0.0.1:8428/vmalert";
    };
  };

  # Routing: see deploy/alertmanager/alertmanager.yml. Keep the PagerDuty key in a credential
  # file (sops-nix / systemd LoadCredential), referenced by routing_key_file.
  services.prometheus.alertmanager = {
    enable = true;
    listenAddress = "127.0.0.1";
    port = 9093;
    configText = builtins.readFile ../alertmanager/alertmanager.yml;
  };
}
