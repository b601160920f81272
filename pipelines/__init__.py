"""skiff's pipelines: ``@dsl.pipeline`` functions composed from components, compiled to KFP IR YAML."""
