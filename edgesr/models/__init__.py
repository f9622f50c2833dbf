"""Model zoo: one module per architecture, each registering an ``ArchSpec`` on import."""
