from todo_service.app import main

main()
