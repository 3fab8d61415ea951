"""Reading Flujo's stored spans and turning them into OTLP spans."""
