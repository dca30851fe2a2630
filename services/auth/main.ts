import { main } from "../../kit/server.ts";
import { authService } from "./service.ts";

await main(authService);
