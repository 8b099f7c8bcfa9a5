from dentvlm.cli import main

main()
