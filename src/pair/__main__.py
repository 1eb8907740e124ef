from pair.cli.main import app

app()
