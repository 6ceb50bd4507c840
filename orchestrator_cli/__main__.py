from orchestrator_cli.cli import main

main()
