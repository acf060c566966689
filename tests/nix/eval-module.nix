# Evaluate deploy/nixos/module.nix without nixpkgs (CI is offline): a stub `lib` with just the
# functions the module uses, option defaults applied by hand, `settings` laid over them. It checks
# what the module generates, not NixOS's option type checking.
#   nix-instantiate --eval --strict --json tests/nix/eval-module.nix --arg settings '{ ... }'
{ settings ? { } }:

let
  id = x: x;
  lib = rec {
    mkOption = id;
    mkEnableOption = description: { default = false; inherit description; };
    mkIf = cond: value: if cond then value else { };
    optional = cond: value: if cond then [ value ] else [ ];
    filterAttrs = pred: set:
      builtins.listToAttrs (builtins.filter (kv: pred kv.name kv.value)
        (map (name: { inherit name; value = set.${name}; }) (builtins.attrNames set)));
    inherit (builtins) mapAttrs;
    concatStringsSep = builtins.concatStringsSep;
    hasPrefix = prefix: s: builtins.substring 0 (builtins.stringLength prefix) s == prefix;
    getExe = package: "${package}/bin/slotwatch";
    types = rec {
      str = "str"; path = "path"; port = "port"; bool = "bool"; package = "package";
      ints = { unsigned = "unsigned"; };
      nullOr = t: t; attrsOf = t: t; listOf = t: t; either = a: b: a;
    };
  };
  # pkgs.formats.toml without nixpkgs: the rendered value comes back as JSON behind a marker, for
  # the test to write as TOML and hand to slotwatch itself.
  pkgs.formats.toml = _: {
    type = "toml";
    generate = name: value: "RENDERED:${name}:" + builtins.toJSON value;
  };
  module = import ../../deploy/nixos/module.nix { inherit config lib pkgs; };
  options = module.options.services.slotwatch;
  config = {
    services.slotwatch =
      builtins.mapAttrs (_: option: option.default or null) options // settings;
  };
in
{
  inherit (module.config) assertions warnings;
  failedAssertions =
    map (a: a.message) (builtins.filter (a: !a.assertion) module.config.assertions);
  firewallPorts = module.config.networking.firewall.allowedTCPPorts;
  firewallCommands = module.config.networking.firewall.extraCommands;
  service = module.config.systemd.services.slotwatch;
}
