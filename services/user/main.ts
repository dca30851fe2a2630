import { main } from "../../kit/server.ts";
import { userService } from "./service.ts";

await main(userService);
