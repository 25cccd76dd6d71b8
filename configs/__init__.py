"""TinySplat presets: one YAML file per `ns-train` method (installed as `tinysplat_ns.presets`)."""
