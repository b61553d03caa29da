"""Developer tools that are not part of the runtime package: the demo and the generated docs."""
