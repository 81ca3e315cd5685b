"""Chat layer of the domain assistant: settings, model loading, the LangChain chain, memory and the CLI."""
