"""`arbg ship --transferable` under the name the shipped card's `commands.reproduce` records."""

from arbg_core.ship import script

main = script(transferable=True)

if __name__ == "__main__":
    main()
