from buttress.cli.app import main

main()
